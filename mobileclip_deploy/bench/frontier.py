"""The latency-accuracy frontier: measured points beside the paper's published ones, as tables and a plot.

Published points come from the shipped `data/frontier.csv` (every row carries its source): the
MobileCLIP rows use the README's iPhone 12 Pro Max latencies, the peers use latencies read off
Apple's figures (`plot_total_latency_ms_approx`). Measured and published latencies come from
different devices, so each set gets its own Pareto front and the plot says which is which.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path

from mobileclip_deploy.atomic import atomic_path, write_text

MEASURED = "measured"
PUBLISHED = "published (MobileCLIP, iPhone 12 Pro Max)"
PEER = "published peer (iPhone 12 Pro Max, read off Apple's figure)"
IMAGENET = "ImageNet-1k val (1000-way)"  # what published figures measure; anything else gets its own panel


@dataclass
class Point:
    name: str
    group: str
    device: str
    backend: str
    scheme: str
    image_ms: float | None
    text_ms: float | None
    total_ms: float
    top1: float | None
    top1_source: str  # measured | published | none
    random_weights: bool
    source: str
    pareto: bool = False
    top1_on: str = IMAGENET  # the data set the top-1 was measured on
    agreement: float | None = None  # share of images whose top-1 the fp32 artifacts predict too (measured points)


def _num(value: str | None) -> float | None:
    return float(value) if value and value.strip() else None


def published_points(names: Iterable[str] | None = None) -> list[Point]:
    """Rows of the shipped frontier.csv that have both a latency and an ImageNet top-1."""
    text = resources.files("mobileclip_deploy").joinpath("data/frontier.csv").read_text("utf-8")
    wanted = set(names) if names is not None else None
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        if wanted is not None and row["name"] not in wanted:
            continue
        total = _num(row["total_latency_ms"])
        top1 = _num(row["imagenet_zs_top1"]) or _num(row["plot_in1k_approx"])
        is_peer = total is None
        total = total if total is not None else _num(row["plot_total_latency_ms_approx"])
        if total is None or top1 is None:
            continue
        out.append(Point(row["name"], PEER if is_peer else PUBLISHED, row["latency_device"] or "iPhone12 Pro Max",
                         "coreml" if not is_peer else "", "", _num(row["image_latency_ms"]),
                         _num(row["text_latency_ms"]), total, top1, "published", False, row["source"]))
    return out


def points_from_records(path: Path) -> list[Point]:
    """One point per (device, runtime, model, backend, scheme, threads/units) with both towers in a bench file."""
    from mobileclip_deploy.bench.records import headline_ms, read_records
    from mobileclip_deploy.errors import UserError
    from mobileclip_deploy.registry import get_variant

    groups: dict[tuple, dict[str, dict]] = {}
    for r in read_records(path):
        a = r["artifact"]
        if not a.get("model") or a.get("tower") not in ("image", "text"):
            continue
        key = (r["target"], r["device"].get("model"), r["runtime"]["name"], a["model"], a["backend"], a["scheme"],
               r.get("variant"), r["threads"], r["compute_units"])
        groups.setdefault(key, {})[a["tower"]] = r  # the latest record of a tower wins
    out = []
    for (target, device, runtime, model, backend, scheme, form, threads, units), towers in groups.items():
        if set(towers) != {"image", "text"}:
            continue
        try:
            variant = get_variant(model)
        except UserError:
            continue
        img, txt = (headline_ms(towers[t]["latency_ms"]) for t in ("image", "text"))
        top1 = variant.published.imagenet_top1
        where = f"{target} {device or ''} {units or f'{threads}T'}".strip()
        out.append(Point(f"{variant.display_name} {backend} {scheme}" + (f" eager {form}" if form else ""), MEASURED,
                         where, backend, scheme, img, txt, img + txt, top1, "published" if top1 else "none",
                         bool(towers["image"].get("random_weights")), f"{path.name}"))
    return out


def mark_pareto(points: list[Point]) -> None:
    """Within each group and data set: a point is on the front if nothing faster (or as fast) is at least as
    accurate."""
    for group, data in {(p.group, p.top1_on) for p in points}:
        members = sorted((p for p in points if p.group == group and p.top1_on == data and p.top1 is not None),
                         key=lambda p: (p.total_ms, -(p.top1 or 0.0)))
        best = float("-inf")
        for p in members:
            p.pareto = (p.top1 or 0.0) > best
            best = max(best, p.top1 or 0.0)


_COLUMNS = [f.name for f in fields(Point)]


def to_csv(points: list[Point]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for p in points:
        writer.writerow({k: ("" if v is None else (f"{v:.4f}" if isinstance(v, float) else v))
                         for k, v in asdict(p).items()})
    return buf.getvalue()


def _fmt(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def to_markdown(points: list[Point], notes: list[str]) -> str:
    lines = [
        ("| point | where | backend | scheme | image ms | text ms | total ms | top-1 | top-1 on | top-1 is | "
         "same top-1 as fp32 | Pareto |"),
        "|---|---|---|---|---:|---:|---:|---:|---|---|---:|:-:|",
    ]
    for p in points:
        agrees = "–" if p.agreement is None else f"{p.agreement:.1%}"
        lines.append(f"| {p.name} | {p.device} | {p.backend or '–'} | {p.scheme or '–'} | {_fmt(p.image_ms)} | "
                     f"{_fmt(p.text_ms)} | {_fmt(p.total_ms)} | {_fmt(p.top1, 1)} | "
                     f"{p.top1_on if p.top1 is not None else '–'} | {p.top1_source} | {agrees} | "
                     f"{'★' if p.pareto else ''} |")
    lines.append("")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _short(p: Point) -> str:
    """Plot label: MobileCLIP -> MC, and the peers' long figure-reading qualifiers dropped."""
    name = p.name.replace("MobileCLIP", "MC").replace(" (plotted point)", "")
    return name.split(" ")[0] if p.group == MEASURED else name


def _place_labels(ax, fig, labels: list[tuple[float, float, str, str]]) -> None:
    """Annotate each point at the first nearby offset whose text box overlaps no marker and no earlier label.

    Figures with dozens of peers otherwise print names over each other; greedy placement in display
    coordinates is enough at this density.
    """
    from matplotlib.transforms import Bbox

    offsets = [(5, 3, "left"), (5, -10, "left"), (-5, 3, "right"), (-5, -10, "right"), (5, 11, "left"),
               (-5, 11, "right"), (5, -18, "left"), (-5, -18, "right"), (0, 20, "center"), (0, -27, "center")]
    renderer = fig.canvas.get_renderer()
    labels = sorted(labels, key=lambda item: (item[0], -item[1]))
    markers = [Bbox.from_bounds(px - 4, py - 4, 8, 8)
               for px, py in (ax.transData.transform((x, y)) for x, y, _, _ in labels)]
    taken: list = []
    inside = ax.get_window_extent()  # a label must not run past the panel's edge (cut off, or over the next panel)
    for i, (x, y, text, color) in enumerate(labels):
        others = taken + markers[:i] + markers[i + 1 :]  # labels must not hide other points either
        for dx, dy, ha in offsets:
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=7, color=color,
                              ha=ha)
            box = ann.get_window_extent(renderer).expanded(1.02, 1.1)
            fits = inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
            if (fits and not any(box.overlaps(other) for other in others)) or (dx, dy, ha) == offsets[-1]:
                taken.append(box)
                break
            ann.remove()


def _panel(ax, points: list[Point], data: str, series: dict[str, tuple[str, str]]) -> list:
    """One latency-vs-top-1 panel for the points measured on `data`; returns its labels to place."""
    from matplotlib.lines import Line2D

    styles = {PUBLISHED: ("o", "tab:blue"), PEER: ("^", "tab:gray")}
    measured_colors = ["tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]
    labels = []
    for p in points:
        if p.group == MEASURED:
            key = f"measured here: {p.backend} {p.scheme} ({p.device})"
            if key not in series:
                count = sum(k.startswith("measured") for k in series)
                series[key] = ("s", measured_colors[count % len(measured_colors)])
        else:
            key = p.group
            series.setdefault(key, styles[p.group])
        marker, color = series[key]
        hollow = p.group == MEASURED and p.top1_source != "measured"
        ax.scatter([p.total_ms], [p.top1], marker=marker, s=60 if p.group != PEER else 40,
                   facecolors="none" if hollow else color, edgecolors=color, linewidths=1.5, alpha=1.0,
                   label=key if key not in ax.get_legend_handles_labels()[1] else None, zorder=3)
        labels.append((p.total_ms, p.top1, _short(p), color))
    for group, style in ((PUBLISHED, "--"), (MEASURED, "-")):
        front = sorted((p for p in points if p.group == group and p.pareto), key=lambda p: p.total_ms)
        if len(front) > 1:
            ax.step([p.total_ms for p in front], [p.top1 for p in front], where="post", linestyle=style,
                    color="black", alpha=0.5, linewidth=1,
                    label=f"Pareto front ({'measured here' if group == MEASURED else 'published MobileCLIP'})")
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.08)  # room for the labels of the outermost points inside the axes
    ax.set_xlabel("latency: image + text encoder, batch 1 (ms, log scale)")
    if data == IMAGENET:
        ax.set_ylabel("ImageNet zero-shot top-1 (%)")
    else:  # a folder of the user's photos: not comparable with ImageNet figures, so not on their axis
        ax.set_ylabel(f"zero-shot top-1 (%) on {data}")
        ax.set_title(f"measured on {data}\nnot ImageNet: not comparable with the published figures", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    if data == IMAGENET and any(p.group == MEASURED for p in points):
        handles += [Line2D([], [], marker="s", linestyle="", markerfacecolor="none", markeredgecolor="black"),
                    Line2D([], [], marker="s", linestyle="", color="black")]
        names += ["hollow: accuracy is the published figure", "filled: accuracy measured here"]
    if handles:
        ax.legend(handles, names, fontsize=7, loc="lower right")
    return labels


def plot(points: list[Point], png: Path, svg: Path, title: str, notes: list[str]) -> None:
    """Log-latency vs top-1. Measured points: filled when their accuracy was measured here, hollow when it is
    the published figure (random weights or no --eval-data). Accuracy measured on another data set than
    ImageNet (e.g. a folder of the user's photos) gets its own panel, named by that data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plotted = [p for p in points if p.top1 is not None]
    datasets = [IMAGENET] + sorted({p.top1_on for p in plotted} - {IMAGENET})
    fig, axes = plt.subplots(1, len(datasets), figsize=(11 + 6 * (len(datasets) - 1), 7), squeeze=False,
                             gridspec_kw={"width_ratios": [11] + [6] * (len(datasets) - 1)})
    series: dict[str, tuple[str, str]] = {}
    labels = {data: _panel(ax, [p for p in plotted if p.top1_on == data], data, series)
              for ax, data in zip(axes[0], datasets)}
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    main = axes[0][0]
    if any(p.group == MEASURED and p.random_weights for p in points):
        low, high = main.get_ylim()
        main.set_ylim(low, high + 0.08 * (high - low))  # room for the banner above the top labels
        main.text(0.01, 0.99, "RANDOM WEIGHTS: measured latencies only; their accuracy is not measured",
                  transform=main.transAxes, va="top", ha="left", fontsize=9, fontweight="bold", color="darkred",
                  bbox={"facecolor": "white", "edgecolor": "darkred", "alpha": 0.9})
    if notes:
        fig.text(0.01, 0.01, "\n".join(notes), fontsize=7, va="bottom", ha="left", wrap=True,
                 bbox={"facecolor": "lightyellow", "alpha": 0.8, "edgecolor": "none"})
        fig.subplots_adjust(bottom=0.1 + 0.03 * len(notes))
    for ax, data in zip(axes[0], datasets):
        _place_labels(ax, fig, labels[data])
    for path, fmt in ((png, "png"), (svg, "svg")):
        with atomic_path(path, replace=True) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150)
    plt.close(fig)


def write_outputs(points: list[Point], out_dir: Path, title: str, notes: list[str]) -> dict[str, Path]:
    """frontier.md, frontier.csv, frontier.png, frontier.svg in `out_dir`."""
    mark_pareto(points)
    order = {MEASURED: 0, PUBLISHED: 1, PEER: 2}
    points.sort(key=lambda p: (order.get(p.group, 3), p.total_ms))
    paths = {ext: out_dir / f"frontier.{ext}" for ext in ("md", "csv", "png", "svg")}
    write_text(paths["csv"], to_csv(points), replace=True)
    write_text(paths["md"], f"# {title}\n\n" + to_markdown(points, notes), replace=True)
    plot(points, paths["png"], paths["svg"], title, notes)
    return paths

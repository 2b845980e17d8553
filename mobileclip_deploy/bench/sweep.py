"""`frontier` as a pipeline: export (or reuse) every variant × scheme, benchmark on the host, optionally evaluate.

Exports go through `exporters.pipeline.run`, so frontier artifacts are exactly what `mobileclip-deploy
export` writes (same tower preparation, manifest, sha256). The pipeline re-exports random-weight entries
on every run; latency does not depend on weight values, so this module keeps its own per-variant cache
key (checkpoint hash, tool versions) and calls the pipeline only when that key changes or a wanted
artifact is missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobileclip_deploy.atomic import write_text
from mobileclip_deploy.bench.artifacts import Artifact, collect
from mobileclip_deploy.bench.frontier import (
    IMAGENET,
    MEASURED,
    Point,
    points_from_records,
    published_points,
    write_outputs,
)
from mobileclip_deploy.bench.host import host_device, loader_for, measure
from mobileclip_deploy.bench.records import append_records, headline_ms, make_record
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters.manifest import tool_versions

Log = Callable[[str], None]
Progress = Callable[[str, int, int], None]

DEFAULT_VARIANTS = ("mobileclip-s0", "mobileclip-s1", "mobileclip-s2", "mobileclip-b")
DEFAULT_SCHEMES = (("onnx", "fp32"), ("onnx", "8da8w"))
# With calibration photos the int8 point is the searched plan (exporters/autoquant.py): static int8 that meets
# cos >= 0.999 and top-1 agreement >= 99%; 8da8w quantizes only linear layers, so MCi image towers stay ~fp32.
CALIBRATED_SCHEMES = (("onnx", "fp32"), ("onnx", "auto"))
ALL_SCHEMES = (("onnx", "fp32"), ("onnx", "8da8w"), ("executorch-xnnpack", "fp32"),
               ("executorch-xnnpack", "8da8w"))
KEY_FILE = "frontier-key.json"
TITLE = "MobileCLIP latency-accuracy frontier: measured here vs published (iPhone 12 Pro Max)"


def host_backends() -> list[str]:
    """The backends whose artifacts this machine's runtimes execute and time as latency (the frontier's points)."""
    from mobileclip_deploy.exporters.backends import all_backends

    return [b.name for b in all_backends().values() if b.runtime and b.platform == "android"]


@dataclass
class SweepConfig:
    variants: tuple[str, ...]
    schemes: tuple[tuple[str, str], ...]
    out_dir: Path
    checkpoints: dict[str, Path]
    threads: int
    warmup: int
    iterations: int
    eval_data: Path | None = None
    eval_templates: str = "openai"
    eval_classes: str = "all"
    class_map: Path | None = None
    eval_limit_per_class: int | None = None
    max_seconds: float | None = None  # per artifact: bounds slow runs (see host.measure)
    calibration: Path | None = None  # photos for static schemes (w8a8)
    students: tuple[Student, ...] = ()  # `distill` runs, measured after the variants
    int8_note: str | None = None  # which int8 point the default schemes drew, and why (None: schemes were chosen)


@dataclass(frozen=True)
class Student:
    """A `distill` run folder: its student checkpoint gets its own artifacts and its own point."""

    run: Path
    variant: str
    checkpoint: Path
    summary: dict[str, Any]

    @property
    def name(self) -> str:
        return self.run.resolve().name

    @property
    def label(self) -> str:
        from mobileclip_deploy.registry import get_variant

        return f"{get_variant(self.variant).display_name}-distilled[{self.name}]"

    @property
    def key(self) -> str:
        """Folder under artifacts/: never shared with the variant's own (official or random) weights."""
        return f"{self.variant}-distilled-{self.name}"

    @classmethod
    def from_run(cls, run: Path) -> Student:
        """Read `summary.json` that `distill` writes when it finishes; a folder without one is refused."""
        from mobileclip_deploy.registry import get_variant

        summary_file = run / "summary.json"
        if not summary_file.is_file():
            raise UserError(f"--student {run}: no summary.json there; pass the -o folder of a finished `distill` run")
        try:
            summary = json.loads(summary_file.read_text("utf-8"))
            variant, student = get_variant(summary["variant"]).name, Path(summary["student"]).name
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"--student {run}: summary.json is not one `distill` wrote ({exc})") from None
        checkpoint = run / student  # the run folder may have moved since: the file is found beside the summary
        if not checkpoint.is_file():
            raise UserError(f"--student {run}: {checkpoint} is missing")
        return cls(run, variant, checkpoint, summary)


def _cache_key(variant: str, checkpoint_sha: str | None, calibration: Path | None) -> dict[str, Any]:
    """Photos count by content (other photos in the same folder are other calibration data)."""
    from mobileclip_deploy.hashing import sha256_path

    return {"variant": variant, "checkpoint_sha256": checkpoint_sha,
            "calibration": sha256_path(calibration) if calibration else None, **tool_versions()}


def _exported(folder: Path, schemes: tuple[tuple[str, str], ...]) -> list[Artifact]:
    """The folder's manifest artifacts of the wanted schemes (none if there is no manifest yet)."""
    if not (folder / "manifest.json").is_file():
        return []
    return [a for a in collect([folder]) if (a.backend, a.scheme) in schemes]


def _one_line(text: str, limit: int = 240) -> str:
    """A failure as one table-friendly line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _failure(what: str, exc: Exception) -> str:
    return _one_line(f"{what}: {type(exc).__name__}: {exc}")


def build_artifacts(cfg: SweepConfig, variant_name: str, log: Log,
                    failures: list[str] | None = None, student: Student | None = None) -> list[Artifact]:
    """Export (or reuse) both towers of one variant for every scheme, without parity checks (latency only).

    With `failures`, an artifact that fails to export is reported there and left out, so one broken
    converter costs one point of the frontier, not the whole run; without it the error is raised.
    With `student`, its checkpoint replaces the variant's, in the student's own folder.
    """
    from mobileclip_deploy import create_model
    from mobileclip_deploy.checkpoint import resolve_checkpoint_file
    from mobileclip_deploy.exporters import pipeline
    from mobileclip_deploy.exporters.backends import get_backend
    from mobileclip_deploy.hashing import sha256_path
    from mobileclip_deploy.registry import get_variant

    variant = get_variant(variant_name)
    ckpt = student.checkpoint if student else cfg.checkpoints.get(variant.name)
    ckpt_sha = sha256_path(resolve_checkpoint_file(ckpt)) if ckpt else None
    what = f"{variant.name} distilled in {student.run}" if student else variant.name
    folder = cfg.out_dir / "artifacts" / (student.key if student else variant.name)
    key = _cache_key(variant.name, ckpt_sha, cfg.calibration)
    key_file = folder / KEY_FILE
    found = _exported(folder, cfg.schemes)
    if key_file.is_file() and json.loads(key_file.read_text("utf-8")) == key and len(found) == 2 * len(cfg.schemes):
        log(f"reuse {what} artifacts (same checkpoint and tool versions)")
        return found
    log(f"export {what}: {', '.join(f'{b}:{s}' for b, s in cfg.schemes)} (image and text towers)")
    pairs = [(backend, backend.scheme(s)) for backend, s in ((get_backend(b), s) for b, s in cfg.schemes)]
    request = pipeline.ExportRequest(pairs, folder, calibration=cfg.calibration, parity=False,
                                     overwrite=True)  # the sweep folder is frontier's own cache
    flag = f"--student {student.run}" if student else "--checkpoint {}=PATH"
    results = pipeline.run(request, create_model(variant.name, ckpt, model_flag=flag), variant, ckpt_sha)
    for r in results:
        if r.status == "failed":
            if failures is None:
                raise UserError(r.message)
            failures.append(_one_line(r.message))
            log(f"failed: {failures[-1]}")
    write_text(key_file, json.dumps(key, indent=1), replace=True)
    return _exported(folder, cfg.schemes)


def bench_artifacts(artifacts: list[Artifact], cfg: SweepConfig, jsonl: Path, random_weights: bool,
                    progress: Progress | None, failures: list[str]) -> dict[tuple[str, str, str, str], float]:
    """Median warm latency per (variant, tower, backend, scheme); records appended to `jsonl`.

    An artifact its runtime cannot load or run is reported in `failures` and left out.
    """
    device = host_device()
    medians: dict[tuple[str, str, str, str], float] = {}
    records = []
    for art in artifacts:
        load, runtime = loader_for(art, cfg.threads)
        label = f"{art.path.name} ({cfg.threads} thread{'s' if cfg.threads > 1 else ''})"
        try:
            m = measure(load, cfg.warmup, cfg.iterations,
                        (lambda i, n, label=label: progress(label, i, n)) if progress else None, cfg.max_seconds)
        except Exception as exc:  # noqa: BLE001 - a runtime refusing one artifact must not end the sweep
            failures.append(_failure(f"{art.path.name} run", exc))
            continue
        extra = {"random_weights": random_weights, "source": "frontier", "manifest_entry": art.manifest_entry}
        rec = make_record(target="host", device=device, runtime=runtime, artifact=art.info(), measurement=m,
                          threads=cfg.threads, extra=extra)
        records.append(rec)
        medians[(art.model or "", art.tower or "", art.backend, art.scheme or "")] = headline_ms(rec["latency_ms"])
    append_records(jsonl, records)
    return medians


def fp32_reference(arts: list[Artifact], backend: str, scheme: str) -> tuple[str, str] | None:
    """The fp32 artifacts a scheme's predictions are compared with: its own backend's, else another backend's
    (all fp32 exports of one model agree to PSNR > 100 dB); None for an fp32 point or when no fp32 pair exists."""
    if scheme == "fp32":
        return None
    pairs = {(a.backend, a.scheme) for a in arts if a.tower == "image"} & {
        (a.backend, a.scheme) for a in arts if a.tower == "text"}
    candidates = [(backend, "fp32")] + sorted((b, s) for b, s in pairs if s == "fp32" and b != backend)
    return next((c for c in candidates if c in pairs), None)


def evaluate_scheme(cfg: SweepConfig, variant_name: str, arts: list[Artifact], backend: str, scheme: str,
                    progress: Progress | None, known: dict[tuple[str, str], list[int]] | None = None,
                    ) -> tuple[float, str, float | None]:
    """Top-1 on --eval-data, what it was measured on (data set, classes, images: a folder of photos is not
    ImageNet, so the plot shows it on its own axis), and the share of images whose prediction the fp32 artifacts
    make too (what users ask when they quantize; None for fp32 itself or without an fp32 pair).

    `known` holds the per-image predictions of the pairs evaluated so far in this sweep (this call adds its own):
    when the fp32 pair is among them, the agreement is counted against those instead of running it again."""
    from mobileclip_deploy.bench.evaluate import artifact_encoder, evaluate, text_identity
    from mobileclip_deploy.registry import get_variant

    variant = get_variant(variant_name)

    def encoders(pair: tuple[str, str]) -> dict[str, Artifact]:
        return {a.tower: a for a in arts if (a.backend, a.scheme) == pair}

    known = {} if known is None else known
    pick = encoders((backend, scheme))
    ref = fp32_reference(arts, backend, scheme)
    reference = None
    if ref is not None and ref not in known:
        fp32 = encoders(ref)
        reference = (artifact_encoder(fp32["image"].path, ref[0]), artifact_encoder(fp32["text"].path, ref[0]),
                     text_identity(fp32["text"], variant.name, None))
    result = evaluate(artifact_encoder(pick["image"].path, backend), artifact_encoder(pick["text"].path, backend),
                      cfg.eval_data, variant.image_size, variant.interpolation, cfg.eval_templates,
                      cfg.eval_classes, cfg.class_map, cfg.eval_limit_per_class, progress=progress,
                      reference=reference, reference_predictions=known.get(ref) if reference is None else None)
    known[(backend, scheme)] = result.predictions
    return (result.top1, f"{cfg.eval_data.name} ({result.classes_scored}-way, {result.images} images)",
            result.agreement_with_fp32)


def _student_note(student: Student) -> str:
    """What the plot cannot show: where the student came from and how well it follows its teachers."""
    summary = student.summary
    agreement = summary.get("agreement") or {}
    facts = ", ".join(f"{k.replace('_', ' ')} {v:.1%}" for k, v in agreement.items()
                      if k.endswith("agreement") and isinstance(v, float))
    note = (f"{student.label}: {student.variant} distilled in "
            f"{student.run} ({summary.get('loss', '?')} loss, {summary.get('steps', '?')} steps, teachers "
            f"{', '.join(summary.get('teachers', []))})")
    return note + (f"; agreement with the teachers on {summary.get('agreement_on', 'its images')}: {facts}"
                   if facts else "")


def run(cfg: SweepConfig, log: Log, progress: Progress | None = None) -> tuple[list[Point], list[str]]:
    """Export, benchmark and (with checkpoints and data) evaluate; returns measured points and plot notes."""
    from mobileclip_deploy.atomic import check_folder
    from mobileclip_deploy.registry import get_variant

    check_folder(cfg.out_dir)  # before any export: results written at the end must have somewhere to go
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = cfg.out_dir / "bench.jsonl"
    device = host_device()
    points: list[Point] = []
    failures: list[str] = []
    any_random = False
    subjects = [(name, None) for name in cfg.variants] + [(s.variant, s) for s in cfg.students]
    for name, student in subjects:
        variant = get_variant(name)
        random_weights = student is None and variant.name not in cfg.checkpoints
        any_random |= random_weights
        arts = build_artifacts(cfg, variant.name, log, failures, student)
        medians = bench_artifacts(arts, cfg, jsonl, random_weights, progress, failures)
        label = student.label if student else variant.display_name
        known: dict[tuple[str, str], list[int]] = {}  # per-image predictions of the pairs evaluated so far
        measured: dict[int, Point] = {}
        # fp32 pairs first, so that the quantized schemes' agreement reuses their predictions; points keep the order
        for index, (backend, scheme) in sorted(enumerate(cfg.schemes), key=lambda item: item[1][1] != "fp32"):
            img = medians.get((variant.name, "image", backend, scheme))
            txt = medians.get((variant.name, "text", backend, scheme))
            if img is None or txt is None:
                continue
            # A student has no published accuracy: without a measured one it is in the table, not the plot.
            top1, source = (None, "none") if student else (variant.published.imagenet_top1, "published")
            top1_on, agreement = IMAGENET, None
            if cfg.eval_data is not None and not random_weights:
                log(f"evaluate {label} {backend} {scheme} on {cfg.eval_data}")
                try:
                    top1, top1_on, agreement = evaluate_scheme(cfg, variant.name, arts, backend, scheme, progress,
                                                               known)
                    source = "measured"
                except Exception as exc:  # noqa: BLE001 - keep the latency point, say why accuracy is missing
                    failures.append(_failure(f"{label} {backend} {scheme} evaluation", exc))
            measured[index] = Point(f"{label} {backend} {scheme}", MEASURED, f"host {cfg.threads}T", backend,
                                    scheme, img, txt, img + txt, top1, source if top1 is not None else "none",
                                    random_weights, f"{jsonl.name} (this run)", top1_on=top1_on, agreement=agreement)
        points += [measured[i] for i in sorted(measured)]
    budget = f" (fewer for slow artifacts: {cfg.max_seconds:g} s each)" if cfg.max_seconds else ""
    notes = [f"Measured: {device['soc']}, {cfg.threads} thread(s), batch 1, median of {cfg.iterations} runs{budget} "
             f"after up to {cfg.warmup} warm-up. Published: iPhone 12 Pro Max (Core ML), from the MobileCLIP "
             "README and, for peers, read off Apple's figure."]
    if any_random:
        notes.append("RANDOM WEIGHTS: no checkpoint for some measured points; their latency is real (it does not "
                     "depend on weight values) but their accuracy is the published figure (hollow markers).")
    elif cfg.eval_data is None:
        notes.append("Accuracy of measured points is the published figure (hollow markers): pass --eval-data to measure it.")
    if cfg.eval_data is not None and cfg.eval_classes == "present":
        notes.append("Measured accuracy scores only the classes present in the evaluation folder.")
    notes += [_student_note(student) for student in cfg.students]
    if failures:
        notes.append("Left out: " + "; ".join(failures))
    return points, notes


def run_frontier(cfg: SweepConfig, log: Log, progress: Progress | None = None,
                 records: Iterable[Path] = ()) -> tuple[list[Point], list[str], dict[str, Path]]:
    """The whole `frontier`: the sweep's points, those of `records` (bench JSON-lines files of any target) and the
    published ones, written as table and plot files in `cfg.out_dir`; returns (points, notes, files written)."""
    points, notes = run(cfg, log, progress)
    if cfg.int8_note:
        notes.append(cfg.int8_note)
    for path in records:
        points += points_from_records(path)
    points += published_points()
    return points, notes, write_outputs(points, cfg.out_dir, TITLE, notes)


def frontier_pair(item: str, calibration: Path | None = None) -> tuple[str, str]:
    """`backend:scheme` for the frontier: a host-runnable backend, and calibration photos for a static scheme."""
    from mobileclip_deploy.exporters.backends import get_backend

    name, sep, scheme_name = item.strip().partition(":")
    if not sep:
        raise UserError(f"--schemes {item!r}: expected BACKEND:SCHEME, e.g. onnx:fp32 or executorch:8da8w")
    backend = get_backend(name)
    scheme = backend.scheme(scheme_name.strip().lower())
    if backend.name not in host_backends():
        raise UserError(f"--schemes {item}: frontier runs {' and '.join(host_backends())} on the host")
    if scheme.static and calibration is None:
        raise UserError(f"--schemes {item}: static quantization needs calibration images: pass --calibration DIR "
                        "(photos like the ones the app will see)")
    return backend.name, scheme.name


def int8_note(calibrated: bool) -> str:
    """Which int8 point the default frontier drew, and why, for the plot and the Markdown."""
    if calibrated:
        return ("int8 point: onnx auto, static int8 with the float layers searched per variant on the --calibration "
                "photos (cos >= 0.999, top-1 agreement >= 99% vs fp32; fastest plan that meets both)")
    return ("int8 point: onnx 8da8w (dynamic int8, needs no photos): it quantizes linear layers only, so conv image "
            "towers run near fp32 speed; pass --calibration PHOTOS to draw the searched static `auto` plan")


def configure(*, target: str = "host", variants: str | None, schemes: str | None, calibration: Path | None,
              all_variants: bool, checkpoints: list[str], students: list[Path], eval_data: Path | None,
              eval_templates: str, eval_classes: str, class_map: Path | None, eval_limit_per_class: int | None,
              out_dir: Path, threads: int, warmup: int, iterations: int, max_seconds: float) -> SweepConfig:
    """The frontier's jobs from its options: which variants and schemes, whose weights, which students; every
    refusal comes here, before any export or measurement."""
    from collections import Counter

    from mobileclip_deploy.bench.host import check_threads
    from mobileclip_deploy.registry import get_variant, list_variants

    if target != "host":
        raise UserError("frontier measures on the host; for a phone run `mobileclip-deploy bench --target "
                        f"{target} ...` and pass its JSON-lines file with --records")
    if all_variants:
        names = tuple(v.name for v in list_variants())
        pairs = ALL_SCHEMES
    else:
        names = (tuple(get_variant(v.strip()).name for v in variants.split(",")) if variants
                 else () if students else DEFAULT_VARIANTS)
        pairs = CALIBRATED_SCHEMES if calibration is not None else DEFAULT_SCHEMES
    if schemes:
        pairs = tuple(frontier_pair(item, calibration) for item in schemes.split(","))
    ckpts: dict[str, Path] = {}
    for item in checkpoints:
        name, sep, path = item.partition("=")
        if not sep:
            raise UserError(f"--checkpoint {item!r}: expected MODEL=PATH")
        ckpts[get_variant(name).name] = Path(path)
    ignored = sorted(set(ckpts) - set(names))
    if ignored:
        raise UserError(f"--checkpoint for {', '.join(ignored)}, which is not among the models measured "
                        f"({', '.join(names)}); add it to --variants or drop that --checkpoint")
    runs = tuple(Student.from_run(run) for run in students)
    clash = sorted(key for key, n in Counter(s.key for s in runs).items() if n > 1)
    if clash:
        raise UserError(f"--student folders with the same name and model ({', '.join(clash)}): their points "
                        "would share a label; rename one run folder")
    if runs and eval_data is None:
        raise UserError("--student needs --eval-data: a distilled student has no published accuracy to plot, "
                        "only the one measured on your labelled photos")
    if eval_data is not None and not ckpts and not runs:
        raise UserError("--eval-data needs at least one --checkpoint MODEL=PATH or --student RUN (random weights "
                        "have no accuracy)")
    if eval_data is not None:
        from mobileclip_deploy.bench.evaluate import plan_eval

        plan_eval(eval_data, eval_templates, eval_classes, class_map, eval_limit_per_class)  # refused up front
    if calibration is not None:
        from mobileclip_deploy.exporters.calibration import list_images

        list_images(calibration)  # a missing or empty folder is refused before any work
    check_threads(threads)
    return SweepConfig(names, pairs, out_dir, ckpts, threads, warmup, iterations, eval_data, eval_templates,
                       eval_classes, class_map, eval_limit_per_class, max_seconds or None, calibration, runs,
                       int8_note(calibration is not None) if not schemes and not all_variants else None)

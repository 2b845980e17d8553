"""`frontier` as a pipeline: export (or reuse) every variant × scheme, benchmark on the host, optionally evaluate.

Exports go through the exporters' own functions (`exporters.onnx.export`, `exporters.executorch.export`
on the folded tower from `exporters.wrappers.tower_module`); this module only decides what to build,
caches it under a key (checkpoint hash, options, tool versions) so a changed option never reuses a
stale file, and turns measurements into frontier points.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobileclip_deploy.atomic import write_text
from mobileclip_deploy.bench.artifacts import Artifact
from mobileclip_deploy.bench.frontier import MEASURED, Point
from mobileclip_deploy.bench.host import host_device, loader_for, measure, package_version
from mobileclip_deploy.bench.records import append_records, headline_ms, make_record

Log = Callable[[str], None]
Progress = Callable[[str, int, int], None]

DEFAULT_VARIANTS = ("mobileclip-s0", "mobileclip-s1", "mobileclip-s2", "mobileclip-b")
DEFAULT_SCHEMES = (("onnx", "fp32"), ("onnx", "8da8w"))
ALL_SCHEMES = (("onnx", "fp32"), ("onnx", "8da8w"), ("executorch-xnnpack", "fp32"),
               ("executorch-xnnpack", "8da8w"))
SUFFIX = {"onnx": ".onnx", "executorch-xnnpack": ".pte"}


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


def _cache_key(variant: str, checkpoint_sha: str | None, backend: str, scheme: str) -> dict[str, Any]:
    tools = {name.replace("-", "_"): package_version(name)
             for name in ("torch", "executorch", "onnxruntime", "onnx", "mobileclip-deploy")}
    return {"variant": variant, "checkpoint_sha256": checkpoint_sha, "backend": backend, "scheme": scheme, **tools}


def _export_one(module: Any, example: Any, tower: str, backend: str, scheme: str, path: Path) -> None:
    """The single place this package calls the exporters for `frontier`."""
    from mobileclip_deploy.exporters import executorch as et_export
    from mobileclip_deploy.exporters import onnx as onnx_export
    from mobileclip_deploy.exporters.pipeline import _quiet  # the exporters' own silencer of converter chatter

    with tempfile.TemporaryDirectory(dir=path.parent) as work, _quiet():
        tmp = Path(work) / path.name
        if backend == "onnx":
            onnx_export.export(module, example, tower, scheme, tmp, None, Path(work))
        else:
            et_export.export(module, example, scheme, "xnnpack", tmp, None)
        tmp.replace(path)


def _failure(what: str, exc: Exception) -> str:
    text = f"{what}: {type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= 240 else text[:237] + "..."


def build_artifacts(cfg: SweepConfig, variant_name: str, log: Log, failures: list[str] | None = None) -> list[Artifact]:
    """Export (or reuse) both towers of one variant for every scheme.

    With `failures`, an artifact that fails to export is reported there and left out, so one broken
    converter costs one point of the frontier, not the whole run; without it the error propagates.
    """
    from mobileclip_deploy import create_model, reparameterize
    from mobileclip_deploy.exporters.wrappers import example_input, tower_module
    from mobileclip_deploy.hashing import sha256_path
    from mobileclip_deploy.registry import get_variant

    variant = get_variant(variant_name)
    ckpt = cfg.checkpoints.get(variant.name)
    ckpt_sha = sha256_path(ckpt) if ckpt else None
    folder = cfg.out_dir / "artifacts" / variant.name
    folder.mkdir(parents=True, exist_ok=True)
    wanted = []
    for backend, scheme in cfg.schemes:
        for tower in ("image", "text"):
            path = folder / f"{variant.name}_{tower}_{backend}_{scheme}{SUFFIX[backend]}"
            key = _cache_key(variant.name, ckpt_sha, backend, scheme)
            key_file = path.with_name(path.name + ".key.json")
            fresh = path.exists() and key_file.exists() and json.loads(key_file.read_text()) == key
            wanted.append((tower, backend, scheme, path, key, key_file, fresh))
    if not all(w[-1] for w in wanted):
        folded = reparameterize(create_model(variant.name, ckpt))
        modules = {t: tower_module(folded, t, variant.image_size, variant.context_length) for t in ("image", "text")}
        for tower, backend, scheme, path, key, key_file, fresh in wanted:
            if fresh:
                continue
            log(f"export {path.name}")
            try:
                _export_one(modules[tower], example_input(tower, variant.image_size, variant.context_length),
                            tower, backend, scheme, path)
            except Exception as exc:  # noqa: BLE001 - see the docstring
                if failures is None:
                    raise
                failures.append(_failure(f"{path.name} export", exc))
                log(f"failed: {failures[-1]}")
                continue
            write_text(key_file, json.dumps(key, indent=1))
    else:
        log(f"reuse {variant.name} artifacts (same checkpoint, options and tool versions)")
    return [Artifact(p, variant.name, t, b, s) for t, b, s, p, *_ in wanted if p.exists()]


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
        rec = make_record(target="host", device=device, runtime=runtime, artifact=art.info(), measurement=m,
                          threads=cfg.threads, extra={"random_weights": random_weights, "source": "frontier"})
        records.append(rec)
        medians[(art.model or "", art.tower or "", art.backend, art.scheme or "")] = headline_ms(rec["latency_ms"])
    append_records(jsonl, records)
    return medians


def evaluate_scheme(cfg: SweepConfig, variant_name: str, arts: list[Artifact], backend: str, scheme: str,
                    progress: Progress | None) -> float:
    from mobileclip_deploy.bench.evaluate import artifact_encoder, evaluate
    from mobileclip_deploy.registry import get_variant

    variant = get_variant(variant_name)
    pick = {a.tower: a for a in arts if a.backend == backend and a.scheme == scheme}
    result = evaluate(artifact_encoder(pick["image"].path, backend), artifact_encoder(pick["text"].path, backend),
                      cfg.eval_data, variant.image_size, variant.interpolation, cfg.eval_templates,
                      cfg.eval_classes, cfg.class_map, cfg.eval_limit_per_class, progress=progress)
    return result.top1


def run(cfg: SweepConfig, log: Log, progress: Progress | None = None) -> tuple[list[Point], list[str]]:
    """Export, benchmark and (with checkpoints and data) evaluate; returns measured points and plot notes."""
    from mobileclip_deploy.registry import get_variant

    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = cfg.out_dir / "bench.jsonl"
    device = host_device()
    points: list[Point] = []
    failures: list[str] = []
    any_random = False
    for name in cfg.variants:
        variant = get_variant(name)
        random_weights = variant.name not in cfg.checkpoints
        any_random |= random_weights
        arts = build_artifacts(cfg, variant.name, log, failures)
        medians = bench_artifacts(arts, cfg, jsonl, random_weights, progress, failures)
        for backend, scheme in cfg.schemes:
            img = medians.get((variant.name, "image", backend, scheme))
            txt = medians.get((variant.name, "text", backend, scheme))
            if img is None or txt is None:
                continue
            top1, source = variant.published.imagenet_top1, "published"
            if cfg.eval_data is not None and not random_weights:
                log(f"evaluate {variant.name} {backend} {scheme} on {cfg.eval_data}")
                try:
                    top1, source = evaluate_scheme(cfg, variant.name, arts, backend, scheme, progress), "measured"
                except Exception as exc:  # noqa: BLE001 - keep the latency point, say why accuracy is missing
                    failures.append(_failure(f"{variant.name} {backend} {scheme} evaluation", exc))
            points.append(Point(f"{variant.display_name} {backend} {scheme}", MEASURED,
                                f"host {cfg.threads}T", backend, scheme, img, txt, img + txt, top1,
                                source if top1 is not None else "none", random_weights,
                                f"{jsonl.name} (this run)"))
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
    if failures:
        notes.append("Left out: " + "; ".join(failures))
    return points, notes


"""The export run, orchestration only: plan (refuse bad requests before any work) -> fold -> for each job: the
backend's export -> the backend's check, judged by the common gate -> manifest entry, written atomically.

What a format does lives in its module under `exporters/backends/`; what every check compares against lives in
`exporters/context.py`; the ARM64 gate (`verify.arm64`) is called from here and imports nothing from here.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
from torch import nn

from mobileclip_deploy.atomic import atomic_path, check_folder, locked_folder, write_text
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters import calibration as calib_mod
from mobileclip_deploy.exporters import manifest as mf
from mobileclip_deploy.exporters.backends import Backend, Build, all_backends, get_backend
from mobileclip_deploy.exporters.context import Context, ParityFailure, judge
from mobileclip_deploy.exporters.schemes import TOWERS, Scheme, parse_thresholds
from mobileclip_deploy.exporters.wrappers import INPUT_NAME, OUTPUT_NAME, example_input
from mobileclip_deploy.hashing import sha256_path, size_bytes
from mobileclip_deploy.progress import LoggedProgress


@dataclass
class ExportRequest:
    pairs: list[tuple[Backend, Scheme]]
    output_dir: Path
    towers: tuple[str, ...] = TOWERS
    calibration: Path | None = None
    calibration_limit: int = 16
    parity: bool = True
    thresholds: dict[str, float] = field(default_factory=dict)
    # Format options (`deployment_target`, `image_input`, `ort`, ...): `options` applies to every requested format
    # that honours the option (CLI flags), `format_options` to one format (a recipe's [formats.<name>] table).
    options: dict[str, Any] = field(default_factory=dict)
    format_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    overwrite: bool = False  # replace artifacts of other weights in output_dir (refused otherwise)
    verify_arm64: str | None = None  # CPU models (comma-separated, "" = defaults) to check artifacts on, or None
    keep: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # backend -> tower -> paths (Recipe.keep)
    min_cos: float = 0.999  # --quant auto targets, on the calibration inputs
    min_agreement: float = 0.99

    def options_for(self, backend: Backend) -> dict[str, Any]:
        given = {k: v for k, v in self.options.items() if k in backend.option_defaults and v is not None}
        return {**self.format_options.get(backend.name, {}), **given}


@dataclass
class Job:
    backend: Backend
    scheme: Scheme
    tower: str
    options: dict[str, Any]  # this format's options, resolved (Backend.resolve)

    def filename(self, model: str, suffix: str | None = None) -> str:
        return mf.artifact_name(model, self.tower, self.backend.name, self.scheme.name, suffix or self.backend.suffix)


@dataclass
class ArtifactResult:
    file: str
    tower: str
    backend: str
    scheme: str
    status: str  # ok, cached, failed
    size_bytes: int | None = None
    parity: dict[str, Any] | None = None
    seconds: float = 0.0
    message: str = ""  # why it failed, or for an `auto` artifact what its plan keeps and what it buys


def plan(request: ExportRequest) -> tuple[list[Job], list[str]]:
    """Check the whole request and list the jobs, before any model is loaded; returns (jobs, notices)."""
    notices: list[str] = []
    if not request.pairs:
        raise UserError("nothing to export: give --format and --quant, or a --recipe")
    for tower in request.towers:
        if tower not in TOWERS:
            raise UserError(f"unknown tower {tower!r}; use image, text or both")
    for backend in dict.fromkeys(b for b, _ in request.pairs):
        if (missing := backend.missing()) is not None:
            raise UserError(missing)
    static = [f"{b.name}:{s.name}" for b, s in request.pairs if s.static]
    if static and request.calibration is None:
        raise UserError(f"{', '.join(static)} is static quantization: activation ranges are fixed from "
                        "representative images, so it needs --calibration DIR (a folder of photos like the "
                        "ones the app will see, 8-100 is plenty)")
    if request.calibration is not None:
        calib_mod.list_images(request.calibration)
    if request.calibration_limit < 1:
        raise UserError("--calibration-limit must be at least 1")
    parse_thresholds(request.thresholds)
    check_folder(request.output_dir)
    _check_auto(request)
    jobs = []
    for backend, scheme in request.pairs:
        options, said = backend.resolve(scheme, request.options_for(backend))
        notices += [n for n in said if n not in notices]
        jobs += [Job(backend, scheme, tower, options) for tower in request.towers]
    for option, value in request.options.items():
        if value and not any(option in j.backend.option_defaults and j.backend.honours(option, j.tower) for j in jobs):
            raise UserError(next(b.option_refusals[option] for b in all_backends().values()
                                 if option in b.option_refusals))
    if request.verify_arm64 is not None:
        from mobileclip_deploy.verify.arm64_env import check_tools, parse_cpus

        parse_cpus(request.verify_arm64 or None)
        if not any(j.backend.arm64_guest for j in jobs):
            guests = [b.name for b in all_backends().values() if b.arm64_guest]
            raise UserError(f"--verify arm64 checks Android artifacts; add --format {' or --format '.join(guests)}")
        check_tools()
    return jobs, notices


def _check_auto(request: ExportRequest) -> None:
    """`--quant auto` targets are in range; a recipe's kept layers only where an exporter honours them (the schemes
    `auto` plans rebuild as: w8a8, 8da8w, or pal4 for Core ML)."""
    from mobileclip_deploy.exporters.autoquant import check_targets

    check_targets(request.min_cos, request.min_agreement)
    for backend, towers in request.keep.items():
        b = get_backend(backend)
        if not any(p.name == backend and s.name in b.rebuilt for p, s in request.pairs):
            raise UserError(f"{b.keep_key} (a --quant auto recipe) for {backend} applies to its "
                            f"{' or '.join(sorted(b.rebuilt))}; add that format and scheme")
        for tower in towers:
            if tower not in TOWERS:
                raise UserError(f"{b.keep_key}: unknown tower {tower!r}; use image or text")


def _check_kept(jobs: list[Job], ctx: Context) -> None:
    """A recipe's kept layers name modules of this model's tower (a typo would quantize the layer meant to stay)."""
    for job in jobs:
        names = {name for name, _ in ctx.export_towers[job.tower].named_modules()}
        for path in _kept(job, ctx.request) or []:
            if path.split("/")[0] not in names:  # `module/op` names one op of a module (ONNX `auto` plans)
                raise UserError(f"{job.backend.keep_key} ({job.tower}) names {path!r}, which is no module of "
                                f"{ctx.variant.name}'s {job.tower} tower; nothing was exported")


def _kept(job: Job, request: ExportRequest) -> list[str] | None:
    """The module paths a recipe keeps out of this job's low-bit form (float for int8, 8-bit palettes for pal4),
    if the job's scheme is one `auto` plans rebuild as; None: the exporter's own lists."""
    return request.keep.get(job.backend.name, {}).get(job.tower) if job.scheme.name in job.backend.rebuilt else None


@contextlib.contextmanager
def _quiet(console: Console) -> Iterator[Console]:
    """Keep converter chatter off the terminal; yields the console the progress is drawn on.

    coremltools draws tqdm bars for every pass, ExecuTorch logs INFO lines and its C++ runtime writes to file
    descriptor 2; all of it goes to a temporary file, replayed on stderr only if the run itself crashes. The
    progress goes to the real stderr (a copy of descriptor 2 taken before the redirection), as a bar in a terminal
    and as plain lines elsewhere.
    """
    disabled = logging.root.manager.disable
    sys.stderr.flush()
    saved_fd = os.dup(2)
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as capture, \
            os.fdopen(os.dup(saved_fd), "w", buffering=1) as real:
        shown = Console(file=real, force_terminal=console.is_terminal, width=console.width, quiet=console.quiet)
        os.dup2(capture.fileno(), 2)
        logging.disable(logging.WARNING)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stderr(capture):
                warnings.simplefilter("ignore")
                yield shown
        except Exception:
            capture.flush()
            capture.seek(0)
            os.write(saved_fd, capture.read()[-20_000:].encode())
            raise
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            logging.disable(disabled)


def folded_weights_id(model: nn.Module) -> str:
    """Hash of the folded weights: identifies random-weight runs, where there is no checkpoint hash."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def context(folded: nn.Module, variant, request: ExportRequest) -> Context:
    """Parity inputs and references of an export, rebuilt the way its run built them (for later checks)."""
    return Context(folded, variant, request)


def _io_specs(build: Build, kind: str) -> tuple[list[dict], list[dict]]:
    variant, tower = build.variant, build.tower
    if tower == "image":
        spec = {"name": INPUT_NAME[tower], "shape": [1, 3, variant.image_size, variant.image_size],
                "dtype": "float32", "kind": kind, "pixel_range": [0.0, 255.0] if kind == "image" else [0.0, 1.0],
                "normalization": "inside_model"}
    else:
        spec = {"name": INPUT_NAME[tower], "shape": [1, variant.context_length], "dtype": "int32", "kind": "tensor"}
    out = {"name": OUTPUT_NAME[tower], "shape": [1, variant.embed_dim], "dtype": "float32", "l2_normalized": False}
    return [spec], [out]


def run(request: ExportRequest, model: nn.Module, variant, checkpoint_sha256: str | None,
        console: Console | None = None) -> list[ArtifactResult]:
    """Export every planned artifact; finished artifacts are in the folder and the manifest, failed ones in neither.

    When nothing finished, what this run created is taken back, but the results (with each failure's reason) are
    still returned and `export --verify arm64` is skipped, so the user always sees why.
    """
    from mobileclip_deploy import reparameterize
    from mobileclip_deploy.tokenizer import get_tokenizer

    jobs, notices = plan(request)
    console = console or Console(quiet=True)
    for notice in notices:
        console.print(f"[yellow]note:[/] {notice}")
    thresholds = parse_thresholds(request.thresholds)
    out_dir = request.output_dir
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"artifacts": []}
    tokenizer_created = not (out_dir / "tokenizer").exists()
    results: list[ArtifactResult] = []
    try:
        with locked_folder(out_dir, lambda: console.print(
                f"[yellow]note:[/] another run is writing to {out_dir}; waiting for it to finish")):
            _remove_partials(out_dir)
            manifest = _open_manifest(out_dir, variant, checkpoint_sha256, model, request.overwrite, console)
            with _quiet(console) as shown, LoggedProgress(*columns, console=shown, transient=False) as progress:
                task = progress.add_task("folding the model", total=len(jobs) + 1)
                folded = reparameterize(model).eval()
                weights_id = checkpoint_sha256 or f"random:{folded_weights_id(folded)}"
                progress.update(task, description="preparing parity and calibration inputs")
                ctx = Context(folded, variant, request)
                _check_kept(jobs, ctx)
                tokenizer = get_tokenizer()
                files = {key: f"tokenizer/{name}" for key, name in
                         tokenizer.write_assets(out_dir / "tokenizer").items()}
                manifest["tokenizer"] = {**files, "sha256": {k: sha256_path(out_dir / f) for k, f in files.items()},
                                         "context_length": variant.context_length,
                                         "sot_token": tokenizer.sot_token_id, "eot_token": tokenizer.eot_token_id,
                                         "pad_token": 0, "lowercase": True}
                if manifest["artifacts"]:  # the kept entries now carry this run's header
                    mf.save(out_dir, manifest)
                progress.advance(task)
                for i, job in enumerate(jobs, 1):
                    label = f"[{i}/{len(jobs)}] {job.filename(variant.name)}"
                    progress.update(task, description=f"{label}: exporting")
                    results += _run_job(job, ctx, request, manifest, weights_id, checkpoint_sha256, thresholds,
                                        lambda step, label=label: progress.update(task, description=f"{label}: {step}"))
                    progress.advance(task)
                progress.update(task, description="done")
    finally:
        if not manifest["artifacts"]:  # nothing finished: take back what this run created, nothing else
            if tokenizer_created:
                shutil.rmtree(out_dir / "tokenizer", ignore_errors=True)
            if created:
                shutil.rmtree(out_dir, ignore_errors=True)
    if request.verify_arm64 is not None and manifest["artifacts"]:
        results = _verify_arm64(request, ctx, results, console)
    return results


def _verify_arm64(request: ExportRequest, ctx: Context, results: list[ArtifactResult],
                  console: Console) -> list[ArtifactResult]:
    """The arm64 part of the parity gate: an artifact that fails on an ARM CPU model is not finished."""
    from mobileclip_deploy.verify import arm64
    from mobileclip_deploy.verify.arm64_env import Arm64Env, default_cache, parse_cpus

    env = Arm64Env(default_cache(), report=lambda m: console.print(f"[dim]{m}[/]"))
    rows = arm64.verify(request.output_dir, ctx, parse_cpus(request.verify_arm64 or None), env, console=console)
    console.print(arm64.table(rows, "arm64 parity (qemu-user; cost is emulated time, not phone latency)",
                              console.width))
    failed = {r.file: r for r in rows if not r.passed}
    for result in results:
        if result.file in failed and result.status != "failed":
            row = failed[result.file]
            result.status = "failed"
            result.message = (f"{result.file}: arm64 parity failed on {row.cpu}: " + (
                row.record.get("error") or f"min cosine {row.record['min_cosine']:.6f} < {row.record['threshold']}"))
    if failed:
        with locked_folder(request.output_dir):
            manifest = mf.load(request.output_dir)
            for entry in manifest["artifacts"]:
                if entry["file"] in failed:
                    entry["status"] = "failed_arm64"
            mf.save(request.output_dir, manifest)
    return results


def _remove_partials(out_dir: Path) -> None:
    """Delete what an interrupted run left (`atomic_path` temp folders); called under the folder's lock."""
    for leftover in out_dir.glob(".*.partial"):
        shutil.rmtree(leftover, ignore_errors=True)


def _weights_of(checkpoint_sha256: str | None) -> str:
    return f"checkpoint sha256 {checkpoint_sha256[:12]}" if checkpoint_sha256 else "random weights (--random-weights)"


def _open_manifest(out_dir: Path, variant, checkpoint_sha256: str | None, model: nn.Module, overwrite: bool,
                   console: Console) -> dict[str, Any]:
    """The folder's manifest, refreshed for this run.

    Entries made from other weights (random weights are never known to be the same) are refused, or with
    `overwrite` removed with their files.
    """
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    fresh = mf.header(variant, checkpoint_sha256, float(model.logit_scale.detach()), {}, created)
    fresh["weights"] = (f"checkpoint:{checkpoint_sha256}" if checkpoint_sha256
                        else getattr(model, "synthetic_weights", "default-init"))  # never a trained model
    old = mf.load(out_dir)
    if old is None:
        return fresh
    if old.get("model") != variant.name:
        raise UserError(f"{out_dir} holds an export of {old.get('model')}; use another --output-dir for {variant.name}")
    same = [e for e in old["artifacts"] if checkpoint_sha256 is not None and e.get("checkpoint_sha256") == checkpoint_sha256]
    other = [e for e in old["artifacts"] if e not in same]
    if other and not overwrite:
        theirs = _weights_of(other[0].get("checkpoint_sha256"))
        raise UserError(f"{out_dir} holds {len(other)} artifact(s) made from {theirs} (e.g. {other[0].get('file')}); "
                        f"this run uses {_weights_of(checkpoint_sha256)}. Use another --output-dir, or --overwrite "
                        "to replace them; nothing was changed")
    for entry in other:
        stale = out_dir / entry.get("file", "")
        if entry.get("file") and stale.exists():
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        console.print(f"[yellow]note:[/] --overwrite: removed {entry.get('file')} (made from other weights)")
    fresh["artifacts"] = same
    if other and same:
        mf.save(out_dir, fresh)
    elif other:  # no manifest may list nothing (or files that are gone)
        (out_dir / mf.FILENAME).unlink()
    return fresh


def _build(job: Job, ctx: Context, path: Path, step) -> Build:
    from mobileclip_deploy.tokenizer import get_tokenizer

    variant, tower = ctx.variant, job.tower
    tokenizer = get_tokenizer()
    metadata = {"variant": variant.name, "tower": tower, "scheme": job.scheme.name, "embed_dim": variant.embed_dim,
                "preprocessing": mf.preprocessing(variant),
                "tokenizer": None if tower == "image" else {
                    "context_length": variant.context_length, "sot_token": tokenizer.sot_token_id,
                    "eot_token": tokenizer.eot_token_id, "pad_token": 0, "lowercase": True}}
    return Build(tower=tower, scheme=job.scheme, module=ctx.export_towers[tower],
                 example=example_input(tower, variant.image_size, variant.context_length), variant=variant,
                 path=path, work_dir=path.parent, calibration=ctx.calibration_for(tower) if job.scheme.static else None,
                 keep=_kept(job, ctx.request), options=job.options, metadata=metadata, inputs=ctx.inputs(tower),
                 context=ctx, step=step)


def _check(job: Job, build: Build, path: Path, handle: Any, threshold: float) -> dict[str, Any]:
    """Run the artifact through its backend's check and judge it with the common rule; a failure is not written."""
    try:
        check, out, extra = job.backend.check(build, path, handle)
    except ParityFailure as exc:
        raise ParityFailure(f"{path.name}: {exc}") from None
    result = judge(build.context, job.tower, job.scheme, check, out, threshold, extra)
    if result["passed"] is False:  # None: not assessable on these weights; the artifact is kept, never "passed"
        raise ParityFailure(
            f"{path.name}: parity failed ({check}): {result['message']} for {job.scheme.name} (min cosine "
            f"{result['min_cosine']:.6f}, centered {result['centered_cosine']:.6f}, max abs error "
            f"{result['max_abs_error']:.3g}, PSNR {result['psnr_db']} dB){extra.get('failure_note', '')}{_diagnosis(job.backend, build, path)}; "
            "nothing was written"
            + (f"; {job.backend.parity_hints[job.scheme.name]}" if job.scheme.name in job.backend.parity_hints else ""))
    return result


def _diagnosis(backend: Backend, build: Build, path: Path) -> str:
    """'; first divergence at MODULE ...' for a failed artifact its backend can compare op by op, else ''."""
    from mobileclip_deploy.verify.diagnose import diagnose

    if not backend.diagnoses or path.suffix != backend.suffix:  # derived files (.ort) are not compared
        return ""
    build.step("diagnosing where it diverges")
    try:
        found = diagnose(backend, path, build.module, build.inputs[:1], build.scheme)
    except UserError as exc:  # the backend cannot look into this artifact (a scheme or a twin it refuses): say why
        return f"; {exc}"
    if found["module"] is None:
        return ""
    return (f"; first divergence at {found['module']} ({found['where']}, op {found['op']}, relative error "
            f"{found['relative_error']:.3g}" + (f"; {found['note']}" if found.get("note") else "") + ")")


def _facts(job: Job, ctx: Context, request: ExportRequest, weights_id: str, threshold: float) -> dict[str, Any]:
    """Everything that shapes the artifact: its cache key is their hash."""
    options = dict(job.options)
    facts = {"format_version": mf.FORMAT_VERSION, "weights": weights_id, "model": ctx.variant.name,
             "tower": job.tower, "backend": job.backend.name, "scheme": job.scheme.name,
             "target": options.pop("deployment_target", None),
             "image_input": bool(options.pop("image_input", False)) and job.backend.honours("image_input", job.tower),
             "ort": bool(options.pop("ort", False)), "parity": request.parity, "threshold": threshold,
             "calibration": [p.name for p in ctx.calibration_files] if job.scheme.static else None,
             "calibration_sha256": ctx.calibration_sha256 if job.scheme.static else None,
             "parity_inputs": ctx.parity_inputs if request.parity and job.tower == "image" else None,
             "tools": mf.tool_versions(), **options}
    limits = {k: float(v) for k, v in sorted(request.thresholds.items())
              if k.startswith(f"{job.scheme.threshold_class}.")}
    if limits:  # a gate limit other than the default judges differently; absent at the defaults (keys stay as they were)
        facts["gate_limits"] = limits
    keep = _kept(job, request)
    if keep is not None:
        facts[job.backend.keep_key] = keep
    if job.scheme.rebuilds_as:
        facts["auto_targets"] = [request.min_cos, request.min_agreement]
    return facts


def _run_job(job: Job, ctx: Context, request: ExportRequest, manifest: dict[str, Any], weights_id: str,
             checkpoint_sha256: str | None, thresholds: dict[str, float], step) -> list[ArtifactResult]:
    variant, out_dir = ctx.variant, request.output_dir
    threshold = thresholds[job.scheme.threshold_class]
    facts = _facts(job, ctx, request, weights_id, threshold)
    key = mf.cache_key(facts)
    files = [job.filename(variant.name, suffix) for suffix in job.backend.files(job.options)]
    cached = [mf.find(manifest, f) for f in files]
    if all(e is not None and e.get("cache_key") == key and (out_dir / e["file"]).exists()
           and sha256_path(out_dir / e["file"]) == e["sha256"] for e in cached):
        return [ArtifactResult(e["file"], job.tower, job.backend.name, job.scheme.name, "cached", e["size_bytes"],
                               e.get("parity")) for e in cached]
    start = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            paths = [stack.enter_context(atomic_path(out_dir / f, replace=True)) for f in files]
            build = _build(job, ctx, paths[0], step)
            backend_facts, handle = job.backend.export(build)
            export_seconds = time.perf_counter() - start
            entries = []
            for path, file in zip(paths, files):
                if path != paths[0]:
                    job.backend.derive(build, path.suffix, path)
                step("checking parity")
                parity = (_check(job, build, path, handle, threshold) if request.parity
                          else {"check": "skipped", "passed": None, "threshold": threshold})
                job.backend.checked(build, path, parity)
                inputs, outputs = _io_specs(build, job.backend.input_kind(build))
                entries.append({
                    "file": file, "sha256": sha256_path(path), "size_bytes": size_bytes(path), "model": variant.name,
                    "tower": job.tower, "backend": job.backend.name, "scheme": job.scheme.name,
                    "format": path.suffix.lstrip("."), "deployment_target": job.options.get("deployment_target")
                    or backend_facts.get("deployment_target") or job.backend.runtime_target, "inputs": inputs,
                    "outputs": outputs, "preprocessing": mf.preprocessing(variant) if job.tower == "image" else None,
                    "checkpoint_sha256": checkpoint_sha256, "weights": weights_id, "tool_versions": facts["tools"],
                    "exported_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "export_seconds": round(export_seconds, 2), "scheme_info": job.scheme.help,
                    "calibration_images": facts["calibration"], "details": backend_facts,
                    "parity": parity, "cache_key": key, "status": "ok"})
            step("writing")
            for file in files:  # no entry may describe a file that is about to be replaced
                mf.drop(out_dir, manifest, file)
        recipe = job.backend.recipe(build, handle, backend_facts)
        if recipe is not None:  # what rebuilds the artifact without measuring again; the manifest names it
            name = job.filename(variant.name, ".recipe.toml")
            write_text(out_dir / name, recipe, replace=True)
            entries[0]["details"]["recipe"] = name
        for entry in entries:
            mf.put(out_dir, manifest, entry)
    except UserError:
        raise  # a request that cannot be met (an `auto` target no plan reaches) stops the run with its message
    except ParityFailure as exc:
        return [ArtifactResult(files[0], job.tower, job.backend.name, job.scheme.name, "failed",
                               seconds=time.perf_counter() - start, message=str(exc))]
    except Exception as exc:  # noqa: BLE001 - one broken converter must not hide the other artifacts' results
        return [ArtifactResult(files[0], job.tower, job.backend.name, job.scheme.name, "failed",
                               seconds=time.perf_counter() - start,
                               message=f"{files[0]}: export failed: {type(exc).__name__}: {exc}{_cause(exc)}")]
    seconds = time.perf_counter() - start
    summary = ""
    if job.scheme.rebuilds_as:
        from mobileclip_deploy.exporters.autoquant import plan_summary

        summary = plan_summary(handle)
    return [ArtifactResult(e["file"], job.tower, job.backend.name, job.scheme.name, "ok", e["size_bytes"],
                           e["parity"], seconds, summary) for e in entries]


def _cause(exc: BaseException) -> str:
    """' (from KIND: why)' when a converter wrapped the real error in its own (coreai-opt's "Centroid calculation
    failed" hides what k-means hit)."""
    cause = exc.__cause__
    return f" (from {type(cause).__name__}: {cause})" if cause is not None and str(cause) not in str(exc) else ""

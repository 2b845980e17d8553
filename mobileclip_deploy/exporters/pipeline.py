"""The export run: plan (refuse bad requests before any work), fold, export, check parity, write atomically."""

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

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from torch import nn

from mobileclip_deploy.atomic import atomic_path, check_folder, locked_folder
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters import calibration as calib_mod
from mobileclip_deploy.exporters import manifest as mf
from mobileclip_deploy.exporters.fold import fold_affine
from mobileclip_deploy.exporters.parity import run_batched, top1_agreement
from mobileclip_deploy.exporters.schemes import BACKENDS, IOS_TARGETS, TOWERS, Backend, Scheme, parse_thresholds
from mobileclip_deploy.exporters.wrappers import INPUT_NAME, OUTPUT_NAME, example_input, tower_module
from mobileclip_deploy.hashing import sha256_path, size_bytes

DEFAULT_TARGET = "iOS17"
PARITY_IMAGES = 8
ZERO_SHOT_TEMPLATE = "a photo of a {}."


@dataclass
class ExportRequest:
    pairs: list[tuple[Backend, Scheme]]
    output_dir: Path
    towers: tuple[str, ...] = TOWERS
    calibration: Path | None = None
    calibration_limit: int = 16
    parity: bool = True
    thresholds: dict[str, float] = field(default_factory=dict)
    deployment_target: str | None = None  # None: iOS17, raised per artifact when a scheme needs more
    image_input: bool = False
    ort: bool = False
    overwrite: bool = False  # replace artifacts of other weights in output_dir (refused otherwise)
    verify_arm64: str | None = None  # CPU models (comma-separated, "" = defaults) to check artifacts on, or None
    arm64_samples: int = 2
    keep: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # backend -> tower -> paths (Recipe.keep)
    min_cos: float = 0.999  # --quant auto targets, on the calibration inputs
    min_agreement: float = 0.99


@dataclass
class Job:
    backend: Backend
    scheme: Scheme
    tower: str
    target: str | None  # Core ML deployment target (coreml and executorch-coreml)

    def filename(self, model: str, suffix: str | None = None) -> str:
        return f"{model}_{self.tower}_{self.backend.name}_{self.scheme.name}{suffix or self.backend.suffix}"


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


class ParityFailure(Exception):
    pass


def plan(request: ExportRequest) -> tuple[list[Job], list[str]]:
    """Check the whole request and list the jobs, before any model is loaded; returns (jobs, notices)."""
    notices: list[str] = []
    if not request.pairs:
        raise UserError("nothing to export: give --format and --quant, or a --recipe")
    for tower in request.towers:
        if tower not in TOWERS:
            raise UserError(f"unknown tower {tower!r}; use image, text or both")
    target = request.deployment_target
    if target is not None and target not in IOS_TARGETS:
        raise UserError(f"unknown deployment target {target!r}; use one of {', '.join(IOS_TARGETS)}")
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
        job_target = None
        if backend.name in ("coreml", "executorch-coreml"):
            job_target = target or DEFAULT_TARGET
            if scheme.min_target and _ios(job_target) < _ios(scheme.min_target):
                if target is not None:
                    raise UserError(f"coreml {scheme.name} needs deployment target {scheme.min_target} or later "
                                    f"({scheme.help}); you asked for {target}")
                notices.append(f"coreml {scheme.name}: deployment target raised to {scheme.min_target} ({scheme.help})")
                job_target = scheme.min_target
        jobs += [Job(backend, scheme, tower, job_target) for tower in request.towers]
    if request.image_input and not any(j.backend.name == "coreml" and j.tower == "image" for j in jobs):
        raise UserError("--image-input applies to Core ML image encoders; add --format coreml and the image tower")
    if request.ort and not any(j.backend.name == "onnx" for j in jobs):
        raise UserError("--ort converts ONNX artifacts; add --format onnx")
    if request.verify_arm64 is not None:
        from mobileclip_deploy.verify.arm64 import RUNTIMES
        from mobileclip_deploy.verify.arm64_env import check_tools, parse_cpus

        parse_cpus(request.verify_arm64 or None)
        if not any(j.backend.name in RUNTIMES for j in jobs):
            raise UserError("--verify arm64 checks Android artifacts; add --format executorch or --format onnx")
        check_tools()
    return jobs, notices


def _check_auto(request: ExportRequest) -> None:
    """`--quant auto` targets are in range; a recipe's kept layers only where an exporter honours them (the schemes
    `auto` plans rebuild as: w8a8, 8da8w, or pal4 for Core ML)."""
    from mobileclip_deploy.exporters.autoquant import check_targets

    check_targets(request.min_cos, request.min_agreement)
    for backend, towers in request.keep.items():
        b = BACKENDS[backend]
        if not any(p.name == backend and s.name in b.rebuilt for p, s in request.pairs):
            raise UserError(f"{b.keep_key} (a --quant auto recipe) for {backend} applies to its "
                            f"{' or '.join(sorted(b.rebuilt))}; add that format and scheme")
        for tower in towers:
            if tower not in TOWERS:
                raise UserError(f"{b.keep_key}: unknown tower {tower!r}; use image or text")


def _search_inputs(job: Job, ctx: _Context) -> tuple[np.ndarray, np.ndarray, Any]:
    """What `--quant auto` scores `job` on: calibration inputs, zero-shot anchors, the targets."""
    from mobileclip_deploy.exporters.autoquant import check_targets

    if job.tower == "image":
        inputs, anchors = ctx.calibration, ctx.class_embeddings()
    else:  # a prompt's top-1 photo among the calibration photos (fp32 image embeddings)
        with torch.no_grad():
            anchors = run_batched(lambda b: ctx.folded.encode_image(torch.from_numpy(b)).numpy(), ctx.calibration)
        inputs = ctx.calibration_tokens
    return inputs, anchors, check_targets(ctx.request.min_cos, ctx.request.min_agreement)


def _auto_plan(job: Job, ctx: _Context, module: nn.Module, example: torch.Tensor, step) -> Any:
    """Search the kept layers of `job` (an ONNX or Core ML `auto` scheme)."""
    from mobileclip_deploy.exporters.autoquant import search_onnx
    from mobileclip_deploy.exporters.autoquant_coreml import search_coreml

    inputs, anchors, targets = _search_inputs(job, ctx)
    if job.backend.name == "coreml":
        return search_coreml(module, example, job.tower, job.target, inputs, anchors, targets, step)
    return search_onnx(module, example, job.tower, ctx.calibration_for(job.tower), inputs, anchors, targets, step)


def _kept(job: Job, request: ExportRequest) -> list[str] | None:
    """The module paths a recipe keeps out of this job's low-bit form (float for int8, 8-bit palettes for pal4),
    if the job's scheme is one `auto` plans rebuild as; None: the exporter's own lists."""
    return request.keep.get(job.backend.name, {}).get(job.tower) if job.scheme.name in job.backend.rebuilt else None


def _ios(target: str) -> int:
    return int(target.removeprefix("iOS"))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep converter chatter off the terminal while rich shows the progress.

    coremltools draws tqdm bars for every pass, ExecuTorch logs INFO lines and its C++ runtime writes to file
    descriptor 2; all of it goes to a temporary file, replayed on stderr only if the run itself crashes.
    """
    disabled = logging.root.manager.disable
    sys.stderr.flush()
    saved_fd = os.dup(2)
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as capture:
        os.dup2(capture.fileno(), 2)
        logging.disable(logging.WARNING)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stderr(capture):
                warnings.simplefilter("ignore")
                yield
        except Exception:
            capture.flush()
            capture.seek(0)
            os.write(saved_fd, capture.read()[-20_000:].encode())
            raise
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            logging.disable(disabled)


def _weights_id(model: nn.Module) -> str:
    """Hash of the folded weights: identifies random-weight runs, where there is no checkpoint hash."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _prompts(count: int, offset: int = 0) -> list[str]:
    """`count` ImageNet prompts spread over classes and templates; another `offset` gives a disjoint-ish set."""
    from mobileclip_deploy.zeroshot import imagenet_classnames, openai_templates

    names, templates = imagenet_classnames(), openai_templates()
    return [templates[(7 * i + offset) % len(templates)].replace("{}", names[(i * 997 // count + offset) % len(names)])
            for i in range(count)]


def context(folded: nn.Module, variant, request: ExportRequest) -> "_Context":
    """Parity inputs and references of an export, rebuilt the way its run built them (for later checks)."""
    return _Context(folded, variant, request)


class _Context:
    """Everything shared by the jobs of one run: towers, reference outputs, calibration data."""

    def __init__(self, folded: nn.Module, variant, request: ExportRequest) -> None:
        from mobileclip_deploy.tokenizer import tokenize

        self.folded, self.variant, self.request = folded, variant, request
        self.towers = {t: tower_module(folded, t, variant.image_size, variant.context_length) for t in request.towers}
        # Artifacts are made from the affine-folded towers; parity compares them with the plain folded ones.
        self.export_towers = {t: fold_affine(m) for t, m in self.towers.items()}
        self.calibration_files: list[Path] = []
        self.calibration: np.ndarray | None = None
        parity_files: list[Path] = []
        if request.calibration is not None:
            images = calib_mod.list_images(request.calibration)
            self.calibration_files = calib_mod.pick(images, request.calibration_limit)
            self.calibration = calib_mod.load_batch(self.calibration_files, variant.image_size, variant.interpolation)
            # Compare on photos the calibration did not see, when the folder has enough of them.
            chosen = set(self.calibration_files)
            unseen = [p for p in images if p not in chosen]
            held_out = len(unseen) >= PARITY_IMAGES
            parity_files = calib_mod.pick(unseen if held_out else images, PARITY_IMAGES)
            self.parity_images = calib_mod.load_batch(parity_files, variant.image_size, variant.interpolation)
            self.parity_source = "held_out_images" if held_out else "calibration_images"
        else:
            self.parity_images = calib_mod.synthetic_batch(PARITY_IMAGES, variant.image_size)
            self.parity_source = "synthetic_images"
        # Cache keys name photos by content: other photos under the same names are other inputs.
        self.calibration_sha256 = [sha256_path(f) for f in self.calibration_files]
        self.parity_inputs = {"source": self.parity_source, "sha256": [sha256_path(f) for f in parity_files]}
        self.prompts = _prompts(PARITY_IMAGES)
        self.tokens = tokenize(self.prompts, variant.context_length).to(torch.int32).numpy()
        self.calibration_tokens = tokenize(_prompts(request.calibration_limit, offset=500),
                                           variant.context_length).to(torch.int32).numpy()
        self._references: dict[str, np.ndarray] = {}
        self._class_embeddings: np.ndarray | None = None

    def inputs(self, tower: str) -> np.ndarray:
        return self.parity_images if tower == "image" else self.tokens

    def reference(self, tower: str) -> np.ndarray:
        """The folded PyTorch tower's outputs on the parity inputs, computed on first use (never without parity)."""
        if tower not in self._references:
            self._references[tower] = self._eager(tower, self.inputs(tower))
        return self._references[tower]

    def calibration_for(self, tower: str) -> np.ndarray | None:
        return self.calibration if tower == "image" else self.calibration_tokens

    def _eager(self, tower: str, x: np.ndarray, module: nn.Module | None = None) -> np.ndarray:
        module = module or self.towers[tower]
        with torch.no_grad():
            return run_batched(lambda b: module(torch.from_numpy(b)).numpy(), x)

    def class_embeddings(self) -> np.ndarray:
        """ImageNet class prompt embeddings of the fp32 text tower (computed once per run)."""
        if self._class_embeddings is None:
            from mobileclip_deploy.zeroshot import class_text_embeddings, imagenet_classnames

            with torch.no_grad():
                self._class_embeddings = class_text_embeddings(
                    self.folded.encode_text, imagenet_classnames(), [ZERO_SHOT_TEMPLATE],
                    context_length=self.variant.context_length).numpy()
        return self._class_embeddings


def _export(job: Job, ctx: _Context, path: Path, step=lambda _: None) -> tuple[dict[str, Any], Any]:
    """Write one artifact to `path`; returns (facts for the manifest, backend handle for the check)."""
    module = ctx.export_towers[job.tower]
    example = example_input(job.tower, ctx.variant.image_size, ctx.variant.context_length)
    calibration = ctx.calibration_for(job.tower) if job.scheme.static else None
    if job.backend.name == "onnx":
        from mobileclip_deploy.exporters import onnx as onnx_exp

        if job.scheme.rebuilds_as:
            plan = _auto_plan(job, ctx, module, example, step)
            step("exporting the chosen plan")
            facts = onnx_exp.export(module, example, job.tower, "w8a8", path, calibration, path.parent,
                                    keep=plan.keep)
            return {**facts, "auto_plan": plan.to_dict()}, plan
        return onnx_exp.export(module, example, job.tower, job.scheme.name, path, calibration, path.parent,
                               keep=_kept(job, ctx.request)), None
    if job.backend.name.startswith("executorch"):
        from mobileclip_deploy.exporters import executorch as et_exp

        delegate = job.backend.name.split("-", 1)[1]
        if job.scheme.rebuilds_as:  # the search writes the chosen .pte (XNNPACK is the only ExecuTorch auto)
            from mobileclip_deploy.exporters.autoquant_xnnpack import search_and_export

            inputs, anchors, targets = _search_inputs(job, ctx)
            plan, facts = search_and_export(module, example, job.tower, ctx.calibration_for(job.tower), inputs,
                                            anchors, targets, path, step, scheme=job.scheme.rebuilds_as)
            return {**facts, "auto_plan": plan.to_dict()}, plan
        facts, edge = et_exp.export(module, example, job.scheme.name, delegate, path, calibration,
                                    job.target or DEFAULT_TARGET, keep=_kept(job, ctx.request))
        if job.target:
            facts["deployment_target"] = job.target
        return facts, edge
    from mobileclip_deploy import __version__
    from mobileclip_deploy.exporters import coreml as coreml_exp

    meta = coreml_exp.metadata_for(ctx.variant, job.tower, job.scheme.name, mf.preprocessing(ctx.variant), __version__)
    if job.scheme.rebuilds_as:
        plan = _auto_plan(job, ctx, module, example, step)
        step("exporting the chosen plan")
        facts = coreml_exp.export(module, example, job.tower, job.scheme.rebuilds_as, path, job.target,
                                  ctx.request.image_input, meta, eight_bit=plan.keep)
        return {**facts, "auto_plan": plan.to_dict()}, plan
    return coreml_exp.export(module, example, job.tower, job.scheme.name, path, job.target,
                             ctx.request.image_input, meta, eight_bit=_kept(job, ctx.request)), None


def _check(job: Job, ctx: _Context, path: Path, handle: Any, threshold: float) -> dict[str, Any]:
    """Run (or, for Core ML on Linux, inspect and weight-check) the artifact against the folded PyTorch tower."""
    tower, x = job.tower, ctx.inputs(job.tower)
    extra: dict[str, Any] = {}
    name = job.backend.name
    if name == "onnx" or name == "ort":
        from mobileclip_deploy.exporters import onnx as onnx_exp

        check, out = "onnxruntime", run_batched(onnx_exp.runner(path, tower), x)
    elif name == "executorch-xnnpack":
        from mobileclip_deploy.exporters import executorch as et_exp

        check, out = "executorch_runtime", run_batched(et_exp.runner(path), x)
    else:
        from mobileclip_deploy.exporters import coreml as coreml_exp

        package = path
        if name == "executorch-coreml":
            from mobileclip_deploy.exporters import executorch as et_exp

            package = et_exp.extract_coreml_payload(handle, path.parent / "payload")
        structure = coreml_exp.inspect_structure(package, tower)
        if name == "executorch-coreml":
            structure["problems"] = []  # the delegate names payload I/O itself; the .pte's I/O is what apps see
        extra["structure"] = {k: structure[k] for k in ("specification_version", "op_counts", "compressed_weight_ops",
                                                        "tables")}
        if structure["problems"]:
            raise ParityFailure(f"{path.name}: structure check failed: {'; '.join(structure['problems'])}")
        if name == "coreml" and coreml_exp.can_predict() and not ctx.request.image_input:
            check, out = "coreml_predict", run_batched(coreml_exp.runner(path, tower), x)
        else:
            proxy, coverage = coreml_exp.decompressed_tower(package, ctx.export_towers[tower])
            extra.update(coverage)
            check, out = "weights_decompressed_in_pytorch", ctx._eager(tower, x, proxy)
    result = judge(ctx, tower, job.scheme, check, out, threshold, extra)
    if result["passed"] is False:  # None: not assessable on these weights; the artifact is kept, never "passed"
        raise ParityFailure(
            f"{path.name}: parity failed ({check}): {result['message']} for {job.scheme.name} (min cosine "
            f"{result['min_cosine']:.6f}, centered {result['centered_cosine']:.6f}, max abs error "
            f"{result['max_abs_error']:.3g}, PSNR {result['psnr_db']} dB); nothing was written")
    return result


def judge(ctx: _Context, tower: str, scheme: Scheme, check: str, out: np.ndarray, threshold: float,
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parity of `out` (outputs on the first len(out) parity inputs) against the folded PyTorch reference.

    The one rule for every runtime: host parity and `verify --arch arm64` both call it. The verdict is
    verify/gate.py's (`threshold` is the scheme class's minimum cosine; `CLASS.METRIC` thresholds of the request
    set the other limits); retrieval agreement pairs the outputs with the other tower's fp32 reference.
    """
    from mobileclip_deploy.verify.gate import assess

    other = "text" if tower == "image" else "image"
    if other not in ctx.towers:  # the partner side of retrieval, even when only one tower is exported
        ctx.towers[other] = tower_module(ctx.folded, other, ctx.variant.image_size, ctx.variant.context_length)
    ref = ctx.reference(tower)[: len(out)]
    inputs = ctx.inputs(tower)
    cls = scheme.threshold_class
    overrides = {**ctx.request.thresholds, cls: threshold}
    result = {"check": check, **assess(ref, out, cls, ctx.reference(other), tower == "image", overrides),
              "threshold": threshold, "inputs": (ctx.parity_source if tower == "image" else "imagenet_prompts"),
              "count": len(out), "inputs_sha256": inputs_sha256(inputs), **(extra or {})}
    if tower == "image" and scheme.bits < 16:
        result["zero_shot_top1_agreement"] = top1_agreement(ref, out, ctx.class_embeddings())
    return result


def inputs_sha256(inputs: np.ndarray) -> str:
    """Identifies the parity inputs, so a later check can prove it used the very same ones."""
    return hashlib.sha256(np.ascontiguousarray(inputs).tobytes()).hexdigest()[:16]


def _io_specs(job: Job, variant, image_input: bool) -> tuple[list[dict], list[dict]]:
    tower = job.tower
    if tower == "image":
        kind = "image" if image_input and job.backend.name == "coreml" else "tensor"
        spec = {"name": INPUT_NAME[tower], "shape": [1, 3, variant.image_size, variant.image_size],
                "dtype": "float32", "kind": kind, "pixel_range": [0.0, 255.0] if kind == "image" else [0.0, 1.0],
                "normalization": "inside_model"}
    else:
        spec = {"name": INPUT_NAME[tower], "shape": [1, variant.context_length], "dtype": "int32", "kind": "tensor"}
    out = {"name": OUTPUT_NAME[tower], "shape": [1, variant.embed_dim], "dtype": "float32", "l2_normalized": False}
    return [spec], [out]


def run(request: ExportRequest, model: nn.Module, variant, checkpoint_sha256: str | None,
        console: Console | None = None) -> list[ArtifactResult]:
    """Export every planned artifact; finished artifacts are in the folder and the manifest, failed ones in neither."""
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
                f"[yellow]note:[/] another export is writing to {out_dir}; waiting for it to finish")):
            _remove_partials(out_dir)
            manifest = _open_manifest(out_dir, variant, checkpoint_sha256, model, request.overwrite, console)
            with Progress(*columns, console=console, transient=False) as progress, _quiet():
                task = progress.add_task("folding the model", total=len(jobs) + 1)
                folded = reparameterize(model).eval()
                weights_id = checkpoint_sha256 or f"random:{_weights_id(folded)}"
                progress.update(task, description="preparing parity and calibration inputs")
                ctx = _Context(folded, variant, request)
                tokenizer = get_tokenizer()
                tokenizer.write_assets(out_dir / "tokenizer")
                manifest["tokenizer"] = {"merges": "tokenizer/merges.txt", "vocab": "tokenizer/vocab.json",
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
    if request.verify_arm64 is not None:
        results = _verify_arm64(request, ctx, results, console)
    return results


def _verify_arm64(request: ExportRequest, ctx: _Context, results: list[ArtifactResult],
                  console: Console) -> list[ArtifactResult]:
    """The arm64 part of the parity gate: an artifact that fails on an ARM CPU model is not finished."""
    from mobileclip_deploy.verify import arm64
    from mobileclip_deploy.verify.arm64_env import Arm64Env, default_cache, parse_cpus

    env = Arm64Env(default_cache(), report=lambda m: console.print(f"[dim]{m}[/]"))
    rows = arm64.verify(request.output_dir, ctx, parse_cpus(request.verify_arm64 or None), env,
                        request.arm64_samples, console)
    console.print(arm64.table(rows, "arm64 parity (qemu-user; cost is emulated time, not phone latency)"))
    failed = {r.file: r for r in rows if not r.passed}
    for result in results:
        if result.file in failed and result.status != "failed":
            row = failed[result.file]
            result.status = "failed"
            result.message = (f"{result.file}: arm64 parity failed on {row.cpu}: " + (
                row.record.get("error") or f"min cosine {row.record['min_cosine']:.6f} < {row.record['threshold']}"))
    if failed:
        with arm64.folder_lock(request.output_dir, "this export folder"):
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


def _run_job(job: Job, ctx: _Context, request: ExportRequest, manifest: dict[str, Any], weights_id: str,
             checkpoint_sha256: str | None, thresholds: dict[str, float], step) -> list[ArtifactResult]:
    variant, out_dir = ctx.variant, request.output_dir
    threshold = thresholds[job.scheme.threshold_class]
    facts = {"format_version": mf.FORMAT_VERSION, "weights": weights_id, "model": variant.name, "tower": job.tower,
             "backend": job.backend.name, "scheme": job.scheme.name, "target": job.target,
             "image_input": request.image_input and job.tower == "image" and job.backend.name == "coreml",
             "ort": request.ort and job.backend.name == "onnx", "parity": request.parity, "threshold": threshold,
             "calibration": [p.name for p in ctx.calibration_files] if job.scheme.static else None,
             "calibration_sha256": ctx.calibration_sha256 if job.scheme.static else None,
             "parity_inputs": ctx.parity_inputs if request.parity and job.tower == "image" else None,
             "tools": mf.tool_versions()}
    keep = _kept(job, request)
    if keep is not None:
        facts[job.backend.keep_key] = keep
    if job.scheme.rebuilds_as:
        facts["auto_targets"] = [request.min_cos, request.min_agreement]
    key = mf.cache_key(facts)
    files = [job.filename(variant.name)] + ([job.filename(variant.name, ".ort")] if facts["ort"] else [])
    cached = [mf.find(manifest, f) for f in files]
    if all(e is not None and e.get("cache_key") == key and (out_dir / e["file"]).exists()
           and sha256_path(out_dir / e["file"]) == e["sha256"] for e in cached):
        return [ArtifactResult(e["file"], job.tower, job.backend.name, job.scheme.name, "cached", e["size_bytes"],
                               e.get("parity")) for e in cached]
    start = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            paths = [stack.enter_context(atomic_path(out_dir / f, replace=True)) for f in files]
            backend_facts, handle = _export(job, ctx, paths[0], step)
            export_seconds = time.perf_counter() - start
            entries = []
            for path, file in zip(paths, files):
                if file.endswith(".ort"):
                    from mobileclip_deploy.exporters import onnx as onnx_exp

                    step("writing ORT format")
                    onnx_exp.write_ort(paths[0], path, job.scheme.name)
                step("checking parity")
                parity = (_check(job, ctx, path, handle, threshold) if request.parity
                          else {"check": "skipped", "passed": None, "threshold": threshold})
                inputs, outputs = _io_specs(job, variant, request.image_input)
                entries.append({
                    "file": file, "sha256": sha256_path(path), "size_bytes": size_bytes(path), "model": variant.name,
                    "tower": job.tower, "backend": job.backend.name, "scheme": job.scheme.name,
                    "format": path.suffix.lstrip("."), "deployment_target": job.target or backend_facts.get(
                        "deployment_target") or _runtime_target(job), "inputs": inputs, "outputs": outputs,
                    "preprocessing": mf.preprocessing(variant) if job.tower == "image" else None,
                    "checkpoint_sha256": checkpoint_sha256, "tool_versions": facts["tools"],
                    "exported_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "export_seconds": round(export_seconds, 2), "scheme_info": job.scheme.help,
                    "calibration_images": facts["calibration"], "details": backend_facts,
                    "parity": parity, "cache_key": key, "status": "ok"})
            step("writing")
            for file in files:  # no entry may describe a file that is about to be replaced
                mf.drop(out_dir, manifest, file)
        if job.scheme.rebuilds_as:
            _write_auto_recipe(job, ctx, handle, entries[0])
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
                               message=f"{files[0]}: export failed: {type(exc).__name__}: {exc}")]
    seconds = time.perf_counter() - start
    summary = ""
    if job.scheme.rebuilds_as:
        from mobileclip_deploy.exporters.autoquant import plan_summary

        summary = plan_summary(handle)
    return [ArtifactResult(e["file"], job.tower, job.backend.name, job.scheme.name, "ok", e["size_bytes"],
                           e["parity"], seconds, summary) for e in entries]


def _write_auto_recipe(job: Job, ctx: _Context, plan, entry: dict[str, Any]) -> None:
    """Write the recipe that rebuilds an `auto` artifact without the search; the manifest names it."""
    from mobileclip_deploy.atomic import write_text
    from mobileclip_deploy.exporters.autoquant import recipe_text

    name = job.filename(ctx.variant.name, ".recipe.toml")
    write_text(ctx.request.output_dir / name, recipe_text(plan, ctx.variant.name, ctx.request.calibration,
                                                          ctx.request.calibration_limit), replace=True)
    entry["details"]["recipe"] = name


def _runtime_target(job: Job) -> str:
    return {"onnx": "onnxruntime>=1.17", "executorch-xnnpack": "executorch>=1.5"}.get(job.backend.name, "")

"""Zero-shot ImageNet-style evaluation of a PyTorch model or of exported artifacts on a local image folder.

Encoders are plain callables (pixels -> embeddings, tokens -> embeddings), so eager PyTorch, ONNX
Runtime and ExecuTorch plug in the same way and a quantized artifact's accuracy drop is measured.

Class folders: the shipped class list has CLIP class names but no WordNet ids, so a folder of wnid
sub-folders is mapped by (1) `--class-map` (ImageNet's LOC_synset_mapping.txt, or a CSV with
`index` and `wnid` columns such as the samples' labels.csv), else (2) the torchvision/ImageNet
convention that class index = position in the sorted list of all 1000 wnids (needs all 1000
folders). Folders named by class index (0..999) or by CLIP class name work without a map.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobileclip_deploy.errors import UserError

ImageFn = Callable[[torch.Tensor], torch.Tensor]
TextFn = Callable[[torch.Tensor], torch.Tensor]
_WNID = re.compile(r"^n\d{8}$")
# Prompts per text batch, apart from the images' --batch-size: the 80,000 prompts of a default eval are most of
# its work, and large batches keep every core's matrix units busy (benchmarks/eval_text_speed.py).
TEXT_BATCH = 256


def all_cores() -> int:
    """The cores the text side runs on (the image side too, for an artifact): an eval is throughput, not latency."""
    return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with `threads` torch threads, then give the caller back its own count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", " ", name.strip().lower())


def read_class_map(path: Path) -> dict[str, int]:
    """wnid -> class index from LOC_synset_mapping.txt (line order) or a CSV with index and wnid columns."""
    text = path.read_text("utf-8")
    first = text.splitlines()[0] if text else ""
    if "," in first and "wnid" in first:
        rows = csv.DictReader(text.splitlines())
        return {r["wnid"].strip(): int(r["index"]) for r in rows}
    mapping = {}
    for i, line in enumerate(l for l in text.splitlines() if l.strip()):
        wnid = line.split()[0]
        if not _WNID.match(wnid):
            raise UserError(f"{path}: line {i + 1} does not start with a WordNet id: {line[:40]!r}")
        mapping[wnid] = i
    return mapping


def resolve_class_folders(root: Path, classnames: list[str], class_map: Path | None = None) -> list[tuple[Path, int]]:
    """(folder, class index) for every class sub-folder of `root`; refuses names it cannot map."""
    if not root.is_dir():
        raise UserError(f"--data {root} is not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise UserError(f"{root} has no class sub-folders (expected one folder per class, e.g. n01440764/)")
    names = [f.name for f in folders]
    if class_map is not None:
        mapping = read_class_map(class_map)
    elif all(_WNID.match(n) for n in names) and len(names) == len(classnames):
        mapping = {n: i for i, n in enumerate(names)}  # sorted wnids == ImageNet class order
    elif all(n.isdigit() for n in names):
        mapping = {n: int(n) for n in names}
    elif all(_WNID.match(n) for n in names):
        raise UserError(
            f"{root} has {len(names)} WordNet-id folders, not all {len(classnames)}: the class index of a subset "
            "cannot be inferred. Pass --class-map LOC_synset_mapping.txt (shipped with ImageNet) or a CSV with "
            "'index' and 'wnid' columns."
        )
    else:
        by_name = {_norm(c): i for i, c in enumerate(classnames)}
        mapping = {n: by_name[_norm(n)] for n in names if _norm(n) in by_name}
    missing = [n for n in names if n not in mapping]
    if missing:
        raise UserError(f"cannot map class folder(s) {', '.join(missing[:5])} to a class index "
                        "(use WordNet ids with --class-map, class indices, or CLIP class names)")
    out = [(f, mapping[f.name]) for f in folders]
    bad = [f.name for f, i in out if not 0 <= i < len(classnames)]
    if bad:
        raise UserError(f"class index out of range for {', '.join(bad[:5])}")
    return out


@dataclass
class EvalResult:
    top1: float
    top5: float | None  # None when fewer than 5 classes competed: every label would be "in the top 5"
    images: int
    classes_scored: int  # how many classes competed for each image
    templates: int
    images_per_s: float
    seconds: float
    classifier_cache: str | None = None  # the cached zero-shot classifier reused, if any
    # share of images whose top-1 class is the one the fp32 PyTorch model predicts (artifacts against the model
    # they were exported from, as whisperkittools' QoI); None when no reference model was given
    agreement_with_fp32: float | None = None
    # each image's top-1 (index into the competing classes, in the plan's image order): a later scheme's agreement
    # is counted against these instead of running the fp32 encoders again; not part of the summary
    predictions: list[int] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        summary = asdict(self)
        del summary["predictions"]
        return summary


TEMPLATE_SETS = ("openai", "simple")
CLASS_SETS = ("all", "present")


@dataclass
class EvalPlan:
    """What an evaluation scores, decided from the arguments alone: refusals (a bad class map, an unknown
    template set) come before any model is loaded, and the size of the work can be announced up front."""

    items: list[tuple[Path, int]]  # (image, class index)
    class_ids: list[int]  # the classes that compete
    templates: list  # prompt templates
    template_set: str
    class_set: str

    @property
    def prompts(self) -> int:
        return len(self.class_ids) * len(self.templates)

    def announcement(self, cached: bool) -> str:
        """How much work this is and, when the prompts dominate, how to shorten it."""
        text = ("the zero-shot classifier comes from the cache" if cached else
                f"{self.prompts:,} prompts ({len(self.class_ids)} classes x {len(self.templates)} templates)")
        line = f"eval: {text}, {len(self.items):,} images"
        if not cached and self.prompts > 10 * len(self.items):
            shorter = [f"--templates simple ({len(self.class_ids) * 7:,} prompts)"] if self.template_set != "simple" \
                else []
            if self.class_set == "all":
                shorter.append("--classes present (only the folder's classes compete)")
            if shorter:
                line += "; the prompts are most of the work: " + " or ".join(shorter) + " shortens it"
        return line


def plan_eval(data: Path, templates: str = "openai", classes: str = "all", class_map: Path | None = None,
              limit_per_class: int | None = None) -> EvalPlan:
    """The images, competing classes and prompt templates of an evaluation (see the module docstring)."""
    from mobileclip_deploy.preprocess import image_files
    from mobileclip_deploy.zeroshot import imagenet_classnames, openai_templates, simple_templates

    if classes not in CLASS_SETS:
        raise UserError("--classes must be 'all' or 'present'")
    tmpl = {"openai": openai_templates, "simple": simple_templates}.get(templates)
    if tmpl is None:
        raise UserError("--templates must be 'openai' or 'simple'")
    names = imagenet_classnames()
    folders = resolve_class_folders(data, names, class_map)
    items = [(f, idx) for folder, idx in folders for f in image_files(folder)[:limit_per_class]]
    class_ids = sorted({i for _, i in folders}) if classes == "present" else list(range(len(names)))
    return EvalPlan(items, class_ids, list(tmpl()), templates, classes)


def evaluate(
    image_fn: ImageFn,
    text_fn: TextFn,
    data: Path | EvalPlan,
    image_size: int,
    interpolation: str = "bilinear",
    templates: str = "openai",
    classes: str = "all",
    class_map: Path | None = None,
    limit_per_class: int | None = None,
    batch_size: int = 32,
    progress: Callable[[str, int, int], None] | None = None,
    text_identity: str | None = None,
    reference: tuple[ImageFn, TextFn, str | None] | None = None,
    reference_predictions: Sequence[int] | None = None,
    threads: int | None = None,
    notice: Callable[[str], None] | None = None,
    text_batch_size: int = TEXT_BATCH,
) -> EvalResult:
    """Top-1/top-5 of zero-shot classification; `classes='present'` scores only classes found in `data`.

    `data` is a folder (planned here with `templates`, `classes`, `class_map`, `limit_per_class`) or a ready
    `EvalPlan`. `text_identity` (the text weights' sha256 and code) lets the zero-shot classifier come from the
    on-disk cache.
    `reference` (fp32 image and text encoders, and their text identity) adds the per-image agreement with them;
    `reference_predictions` (the `predictions` of an earlier evaluation of those encoders on the same plan) adds it
    without running them again.
    Eager PyTorch runs on `threads` (default: all cores); `notice` gets the time estimate the first text batch
    gives (batches go longest prompts first, so it errs long).
    """
    from mobileclip_deploy.preprocess import load_image, preprocess_pil
    from mobileclip_deploy.zeroshot import (cached_class_embeddings, class_text_embeddings, imagenet_classnames,
                                            zero_shot_logits)

    plan = data if isinstance(data, EvalPlan) else plan_eval(data, templates, classes, class_map, limit_per_class)
    items, class_ids, tmpl = plan.items, plan.class_ids, plan.templates
    names = imagenet_classnames()
    t0 = time.perf_counter()
    prompts_done = 0

    def counting_text_fn(tokens: torch.Tensor) -> torch.Tensor:
        nonlocal prompts_done
        started = time.perf_counter()
        out = text_fn(tokens)
        prompts_done += len(tokens)
        if notice and prompts_done == len(tokens) < plan.prompts:  # the first batch: the speed of this machine
            rate = prompts_done / (time.perf_counter() - started)
            notice(f"eval: the text encoder runs {rate:.1f} prompts/s here: about "
                   f"{_duration(plan.prompts / rate)} for the {plan.prompts:,} prompts")
        if progress:
            progress("text", prompts_done, plan.prompts)
        return out

    chosen = [names[i] for i in class_ids]
    with torch_threads(threads or all_cores()):
        class_emb, reused = cached_class_embeddings(text_identity, chosen, tmpl, lambda: class_text_embeddings(
            counting_text_fn, chosen, tmpl, text_batch_size))
        ref_emb = None
        if reference is not None:
            ref_emb, _ = cached_class_embeddings(reference[2], chosen, tmpl, lambda: class_text_embeddings(
                reference[1], chosen, tmpl, text_batch_size))
    if reference_predictions is not None and len(reference_predictions) != len(items):
        raise ValueError(f"{len(reference_predictions)} reference predictions for {len(items)} images")
    position = {c: j for j, c in enumerate(class_ids)}
    correct1 = correct5 = agree = 0
    predictions: list[int] = []
    t_img = time.perf_counter()
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        pixels = torch.stack([preprocess_pil(load_image(f), image_size, interpolation) for f, _ in chunk])
        logits = zero_shot_logits(image_fn(pixels), class_emb, float(np.log(100.0)))
        topk = logits.topk(min(5, logits.shape[1]), dim=1).indices
        target = torch.tensor([position[i] for _, i in chunk])
        correct1 += int((topk[:, 0] == target).sum())
        correct5 += int((topk == target[:, None]).any(dim=1).sum())
        predictions += topk[:, 0].tolist()
        if ref_emb is not None:
            ref_top1 = zero_shot_logits(reference[0](pixels), ref_emb, float(np.log(100.0))).argmax(dim=1)
            agree += int((ref_top1 == topk[:, 0]).sum())
        if progress:
            progress("images", start + len(chunk), len(items))
    img_seconds = time.perf_counter() - t_img
    n = len(items)
    if reference_predictions is not None and ref_emb is None:
        agree = sum(a == b for a, b in zip(predictions, reference_predictions))
    top5 = 100.0 * correct5 / n if len(class_ids) >= 5 else None
    compared = ref_emb is not None or reference_predictions is not None
    return EvalResult(100.0 * correct1 / n, top5, n, len(class_ids), len(tmpl),
                      n / img_seconds if img_seconds > 0 else 0.0, time.perf_counter() - t0,
                      str(reused) if reused else None, agree / n if compared else None, predictions)


def torch_encoders(model: torch.nn.Module) -> tuple[ImageFn, TextFn]:
    """Eager encoders. A causal text tower's batch is cut after its longest prompt (the end-of-text token, the
    largest id, marks it): the mask keeps padding from reaching that token, so the embeddings are the same at a
    fraction of the work (about 20 of 77 positions for ImageNet prompts). A bidirectional tower (MobileCLIP-S*)
    sees its padding and keeps all 77."""
    causal = bool(model.text.cfg.causal)

    def image(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.encode_image(x)

    def text(tokens: torch.Tensor) -> torch.Tensor:
        if causal:
            tokens = tokens[:, : int(tokens.argmax(dim=-1).max()) + 1]
        with torch.inference_mode():
            return model.encode_text(tokens)

    return image, text


def artifact_encoder(path: Path, backend: str, threads: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Run an exported artifact with its backend's runtime on `threads` (default: all cores), one fixed-size batch
    at a time."""
    from mobileclip_deploy import runtimes
    from mobileclip_deploy.exporters.backends import of_artifact

    runtime = of_artifact(backend).runtime
    if runtime is None:
        raise UserError(f"{path.name}: {backend} artifacts cannot be evaluated on this machine")
    runner = runtimes.load(path, threads or all_cores(), runtime=runtime)
    return lambda x: torch.from_numpy(runner.batched(x.numpy()))


def choose_artifacts(paths: list[Path], backend: str | None, scheme: str | None,
                     model: str | None) -> tuple[Any, dict[str, Any]]:
    """The registry variant and at most one artifact per tower that `eval --artifacts` scores (the other tower,
    if any, runs in eager PyTorch); refuses ambiguous, image-less and mixed-model choices."""
    from mobileclip_deploy.bench import artifacts as arts
    from mobileclip_deploy.registry import get_variant

    picked = arts.select(arts.collect(list(paths)), {backend} if backend else None, {scheme} if scheme else None)
    by_tower: dict[str, Any] = {}
    for a in picked:
        if a.tower in by_tower:
            raise UserError(f"several {a.tower} artifacts match; narrow with --backend/--scheme")
        by_tower[a.tower] = a
    if paths and "image" not in by_tower:
        raise UserError("no image artifact among --artifacts (after --backend/--scheme filters)")
    models = {get_variant(a.model).name for a in by_tower.values() if a.model}
    if len(models) > 1:
        raise UserError(f"the artifacts are of different models ({', '.join(sorted(models))})")
    if model is None and not models:
        raise UserError("pass --model NAME (the artifacts do not say which model they are)")
    variant = get_variant(model or next(iter(models)))
    if models and variant.name not in models:
        raise UserError(f"--model {variant.name} but the artifacts are of {next(iter(models))}: preprocessing "
                        "would not match")
    return variant, by_tower


def same_checkpoint(artifacts: Any, checkpoint: Path) -> None:
    """Refuse artifacts exported from other weights than --checkpoint: the accuracy would be of another model."""
    from mobileclip_deploy.checkpoint import resolve_checkpoint_file
    from mobileclip_deploy.hashing import sha256_path

    sha = sha256_path(resolve_checkpoint_file(checkpoint))
    for a in artifacts:
        if a.manifest_entry is None:
            continue
        theirs = a.manifest_entry.get("checkpoint_sha256")
        if theirs != sha:
            source = f"checkpoint sha256 {theirs[:12]}" if theirs else "random weights"
            raise UserError(f"{a.path.name} was exported from {source}, not from --checkpoint {checkpoint} "
                            f"(sha256 {sha[:12]}); export again from this checkpoint, or pass the one it was made from")


def text_identity(text_artifact: Any, model: str, ckpt_sha: str | None) -> str | None:
    """What the zero-shot classifier cache keys on: the text artifact's sha256, or the checkpoint's and the code's
    (random weights: None, never cached)."""
    from mobileclip_deploy.hashing import package_source_sha256

    if text_artifact is not None:
        return f"artifact {text_artifact.backend} {text_artifact.sha256}"
    return f"eager {model} checkpoint {ckpt_sha} code {package_source_sha256()}" if ckpt_sha else None

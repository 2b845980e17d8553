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

import csv
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobileclip_deploy.bench.artifacts import loading
from mobileclip_deploy.errors import UserError

ImageFn = Callable[[torch.Tensor], torch.Tensor]
TextFn = Callable[[torch.Tensor], torch.Tensor]
_WNID = re.compile(r"^n\d{8}$")


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    image_fn: ImageFn,
    text_fn: TextFn,
    data: Path,
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
) -> EvalResult:
    """Top-1/top-5 of zero-shot classification; `classes='present'` scores only classes found in `data`.

    `text_identity` (the text weights' sha256 and code) lets the zero-shot classifier come from the on-disk cache.
    `reference` (fp32 image and text encoders, and their text identity) adds the per-image agreement with them.
    """
    from mobileclip_deploy.preprocess import image_files, load_image, preprocess_pil
    from mobileclip_deploy.zeroshot import (
        cached_class_embeddings,
        class_text_embeddings,
        imagenet_classnames,
        openai_templates,
        simple_templates,
        zero_shot_logits,
    )

    names = imagenet_classnames()
    folders = resolve_class_folders(data, names, class_map)
    items = []
    for folder, idx in folders:
        files = image_files(folder)
        items += [(f, idx) for f in files[:limit_per_class]]
    if classes == "present":
        class_ids = sorted({i for _, i in folders})
    elif classes == "all":
        class_ids = list(range(len(names)))
    else:
        raise UserError("--classes must be 'all' or 'present'")
    tmpl = {"openai": openai_templates, "simple": simple_templates}.get(templates)
    if tmpl is None:
        raise UserError("--templates must be 'openai' or 'simple'")
    t0 = time.perf_counter()
    prompts_done = 0

    def counting_text_fn(tokens: torch.Tensor) -> torch.Tensor:
        nonlocal prompts_done
        out = text_fn(tokens)
        prompts_done += len(tokens)
        if progress:
            progress("text", prompts_done, len(class_ids) * len(tmpl()))
        return out

    chosen = [names[i] for i in class_ids]
    class_emb, reused = cached_class_embeddings(
        text_identity, chosen, tmpl(), lambda: class_text_embeddings(counting_text_fn, chosen, tmpl(), batch_size))
    ref_emb = None
    if reference is not None:
        ref_emb, _ = cached_class_embeddings(reference[2], chosen, tmpl(), lambda: class_text_embeddings(
            reference[1], chosen, tmpl(), batch_size))
    position = {c: j for j, c in enumerate(class_ids)}
    correct1 = correct5 = agree = 0
    t_img = time.perf_counter()
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        pixels = torch.stack([preprocess_pil(load_image(f), image_size, interpolation) for f, _ in chunk])
        logits = zero_shot_logits(image_fn(pixels), class_emb, float(np.log(100.0)))
        topk = logits.topk(min(5, logits.shape[1]), dim=1).indices
        target = torch.tensor([position[i] for _, i in chunk])
        correct1 += int((topk[:, 0] == target).sum())
        correct5 += int((topk == target[:, None]).any(dim=1).sum())
        if ref_emb is not None:
            ref_top1 = zero_shot_logits(reference[0](pixels), ref_emb, float(np.log(100.0))).argmax(dim=1)
            agree += int((ref_top1 == topk[:, 0]).sum())
        if progress:
            progress("images", start + len(chunk), len(items))
    img_seconds = time.perf_counter() - t_img
    n = len(items)
    top5 = 100.0 * correct5 / n if len(class_ids) >= 5 else None
    return EvalResult(100.0 * correct1 / n, top5, n, len(class_ids), len(tmpl()),
                      n / img_seconds if img_seconds > 0 else 0.0, time.perf_counter() - t0,
                      str(reused) if reused else None, agree / n if ref_emb is not None else None)


def torch_encoders(model: torch.nn.Module) -> tuple[ImageFn, TextFn]:
    def image(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.encode_image(x)

    def text(tokens: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.encode_text(tokens)

    return image, text


def artifact_encoder(path: Path, backend: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Run an ONNX or ExecuTorch artifact one row at a time (exported artifacts have a fixed batch of 1)."""
    if backend == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        with loading(path, "ONNX Runtime"):
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        dtype = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64}[inp.type]

        def run_one(x: np.ndarray) -> np.ndarray:
            return sess.run(None, {inp.name: x.astype(dtype)})[0]
    elif backend.startswith("executorch") and backend != "executorch-coreml":
        from executorch.runtime import Runtime

        with loading(path, "ExecuTorch"):
            method = Runtime.get().load_program(str(path)).load_method("forward")
        code = method.metadata.input_tensor_meta(0).dtype()
        dtype = {3: np.int32, 4: np.int64, 6: np.float32}[code]

        def run_one(x: np.ndarray) -> np.ndarray:
            return method.execute((torch.from_numpy(np.ascontiguousarray(x.astype(dtype))),))[0].numpy()
    else:
        raise UserError(f"{path.name}: {backend} artifacts cannot be evaluated on this machine")

    def encode(x: torch.Tensor) -> torch.Tensor:
        arr = x.numpy()
        return torch.from_numpy(np.concatenate([run_one(arr[i : i + 1]) for i in range(len(arr))]))

    return encode

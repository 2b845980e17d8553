"""Zero-shot classification helpers: ImageNet class names, prompt templates, class embeddings, logits.

Everything takes plain callables and tensors rather than a model object, so the eager model, the
CLI `classify`/`eval` commands and exported runtimes (ONNX, ExecuTorch, Core ML) share one code path.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .cache import cache_dir
from .tokenizer import tokenize

__all__ = [
    "imagenet_classnames",
    "openai_templates",
    "simple_templates",
    "build_prompts",
    "class_text_embeddings",
    "zero_shot_logits",
    "cached_class_embeddings",
    "MAX_LOGIT_SCALE",
]

# The official models clamp exp(logit_scale) to 100 (CLIP's training-time cap).
MAX_LOGIT_SCALE = 100.0


@functools.lru_cache(maxsize=1)
def _metadata() -> dict[str, Any]:
    text = resources.files("mobileclip_deploy").joinpath("data").joinpath("imagenet_zeroshot.json").read_text("utf-8")
    return json.loads(text)


def imagenet_classnames() -> list[str]:
    """The 1000 ImageNet class names in CLIP's spelling, in class-index order."""
    return list(_metadata()["classnames"])


def openai_templates() -> list[str]:
    """The 80 OpenAI prompt templates; `{}` marks where the class name goes."""
    return list(_metadata()["openai_templates"])


def simple_templates() -> list[str]:
    """open_clip's 7-template subset, for quicker (slightly less accurate) evaluation."""
    return list(_metadata()["simple_templates"])


def build_prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """Per class, every template filled with its name (plain substitution, so braces in names are safe)."""
    return [[template.replace("{}", name) for template in templates] for name in classnames]


@torch.no_grad()
def class_text_embeddings(
    encode_text: Callable[[torch.Tensor], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 256,
    context_length: int = 77,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """C×D classifier weights: per class, the re-normalized mean of its L2-normalized prompt embeddings.

    Prompts are encoded in batches of `batch_size` across classes, so runtimes with a fixed batch
    dimension can wrap `encode_text` to pad and slice. `progress(done, total)` is called after each batch (prompts),
    since 1000 classes x 80 templates take minutes. Batches go longest prompts first: an encoder may cut a batch to
    its longest prompt (a causal tower, exactly), and the first batch, the slowest, gives a safe time estimate.
    """
    if not classnames or not templates:
        raise ValueError("need at least one class name and one template")
    prompts = [p for per_class in build_prompts(classnames, templates) for p in per_class]
    tokens = tokenize(prompts, context_length)
    order = torch.argsort(tokens.argmax(dim=-1), descending=True, stable=True)  # end-of-text: the largest id
    chunks = []
    for start in range(0, len(prompts), batch_size):
        chunks.append(F.normalize(encode_text(tokens[order[start : start + batch_size]]).float(), dim=-1))
        if progress:
            progress(min(start + batch_size, len(prompts)), len(prompts))
    per_prompt = torch.cat(chunks)[torch.argsort(order)]  # back to prompt order
    per_prompt = per_prompt.reshape(len(classnames), len(templates), -1)
    return F.normalize(per_prompt.mean(dim=1), dim=-1)


def zero_shot_logits(
    image_emb: torch.Tensor, class_emb: torch.Tensor, logit_scale: float | torch.Tensor
) -> torch.Tensor:
    """N×C logits: cosine similarity of normalized image embeddings with class rows, times the scale.

    `logit_scale` is the model's log-space parameter; its exponential is capped at 100 like the model does.
    """
    scale = torch.as_tensor(logit_scale, dtype=torch.float32).exp().clamp(max=MAX_LOGIT_SCALE)
    image_emb = F.normalize(image_emb.float(), dim=-1)
    class_emb = F.normalize(class_emb.float(), dim=-1)
    return scale * image_emb @ class_emb.T


def _classifier_key(text_identity: str, classnames: Sequence[str], templates: Sequence[str]) -> tuple[str, Path]:
    key = json.dumps({"text": text_identity, "classnames": list(classnames), "templates": list(templates),
                      "format": 1}, sort_keys=True)
    return key, cache_dir("zeroshot") / f"{hashlib.sha256(key.encode()).hexdigest()}.safetensors"


def classifier_cached(text_identity: str | None, classnames: Sequence[str], templates: Sequence[str]) -> bool:
    """Whether a cached classifier file exists for these inputs (checked in full only when it is read)."""
    return text_identity is not None and _classifier_key(text_identity, classnames, templates)[1].is_file()


def cached_class_embeddings(text_identity: str | None, classnames: Sequence[str], templates: Sequence[str],
                            compute: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, Path | None]:
    """`compute()`'s classifier, reused from disk when the text encoder, class names and templates are the same.

    1000 classes x 80 templates take minutes to encode on every `eval`. `text_identity` names the exact text
    weights (checkpoint or artifact sha256; None, e.g. random weights, disables the cache). The file holds its
    full key and the embeddings' sha256, both checked before reuse, so a stale or altered file is recomputed.
    Returns the embeddings and the cache file reused (None when computed).
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import save_file

    from mobileclip_deploy.atomic import atomic_path

    if text_identity is None:
        return compute(), None
    key, path = _classifier_key(text_identity, classnames, templates)
    if path.is_file():
        try:
            with safe_open(str(path), "pt") as fh:
                meta, emb = fh.metadata() or {}, fh.get_tensor("embeddings")
            if meta.get("key") == key and meta.get("sha256") == _tensor_sha256(emb):
                return emb, path
        except (SafetensorError, OSError, ValueError, KeyError):
            pass  # unreadable: recompute and replace it
    emb = compute().float().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, replace=True) as tmp:
        save_file({"embeddings": emb}, str(tmp), metadata={"key": key, "sha256": _tensor_sha256(emb)})
    return emb, None


def _tensor_sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()

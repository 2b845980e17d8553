"""Zero-shot classification helpers: ImageNet class names, prompt templates, class embeddings, logits.

Everything takes plain callables and tensors rather than a model object, so the eager model, the
CLI `classify`/`eval` commands and exported runtimes (ONNX, ExecuTorch, Core ML) share one code path.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import torch
import torch.nn.functional as F

from .tokenizer import tokenize

__all__ = [
    "imagenet_classnames",
    "openai_templates",
    "simple_templates",
    "build_prompts",
    "class_text_embeddings",
    "zero_shot_logits",
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
) -> torch.Tensor:
    """C×D classifier weights: per class, the re-normalized mean of its L2-normalized prompt embeddings.

    Prompts are encoded in batches of `batch_size` across classes, so runtimes with a fixed batch
    dimension can wrap `encode_text` to pad and slice.
    """
    if not classnames or not templates:
        raise ValueError("need at least one class name and one template")
    prompts = [p for per_class in build_prompts(classnames, templates) for p in per_class]
    chunks = []
    for start in range(0, len(prompts), batch_size):
        tokens = tokenize(prompts[start : start + batch_size], context_length)
        chunks.append(F.normalize(encode_text(tokens).float(), dim=-1))
    per_prompt = torch.cat(chunks).reshape(len(classnames), len(templates), -1)
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

"""Synthetic weights that behave like trained ones, for `--random-weights` and the tests.

Default initialisation (LayerScale 1e-5) makes every photo embed to nearly one vector (pairwise cosine >= 0.99999),
so a parity check on such weights cannot see an artifact that damages everything but that constant. These weights
give different inputs different embeddings, as trained weights do; they are still not a trained model, and every
output made from them says so.

Recipe `golden-qk2` (seed 0 is exactly ../shared/README.md's golden weight recipe, then one change):
every tensor is a pure function of its state-dict key, shape, dtype and the seed (rules below), and in the text
tower the query and key rows of each attention input projection are doubled. Without that change a text tower's
attention is near-uniform, so a prompt's embedding is mostly its end-of-text token and position and 8 different
prompts have pairwise cosines 0.98-0.998 (S0, S2); doubled q/k (attention logits x4) gives 0.32-0.74 (S0),
0.51-0.74 (S2), 0.54-0.72 (B), the spread of trained CLIP text embeddings.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch
from torch import nn

RECIPE = "golden-qk2"
QK_SCALE = 2.0
_QKV_LAST = ("qkv_proj.weight", "qkv_proj.bias", "in_proj_weight", "in_proj_bias")


def recipe_tensor(key: str, shape: list[int] | tuple[int, ...], dtype: str, seed: int = 0) -> torch.Tensor:
    """The golden recipe's value of one tensor; `seed` starts the key's crc32 (0: the golden weights themselves)."""
    rng = np.random.default_rng(zlib.crc32(key.encode("utf-8"), seed))
    last = key.rsplit(".", 1)[-1]
    if dtype.startswith("int"):
        return torch.zeros(tuple(shape), dtype=getattr(torch, dtype))
    if last == "logit_scale":
        value = np.full(shape, math.log(1 / 0.07))
    elif last == "running_var":
        value = rng.uniform(0.5, 1.5, shape)
    elif last == "running_mean":
        value = rng.normal(0.0, 0.02, shape)
    elif "layer_scale" in last or last == "gamma":
        value = rng.uniform(0.01, 0.1, shape)
    elif len(shape) <= 1:
        value = rng.uniform(0.5, 1.5, shape) if last == "weight" else rng.normal(0.0, 0.02, shape)
    else:
        value = rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))
    return torch.from_numpy(np.asarray(value, dtype=np.float32))


def synthetic_state_dict(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """`golden-qk2` weights for every tensor of `model` (train-time form: keys as in ../shared/reference/keys)."""
    state = {}
    for key, tensor in model.state_dict().items():
        value = recipe_tensor(key, tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."), seed)
        if key.startswith("text") and key.endswith(_QKV_LAST):
            rows = value.shape[0] // 3 * 2  # q and k come first in a fused projection
            value[:rows] *= QK_SCALE
        state[key] = value
    return state


def load_synthetic(model: nn.Module, seed: int = 0) -> str:
    """Fill `model` with synthetic weights in place; returns the id the manifest records (`synthetic:<recipe>:<seed>`)."""
    model.load_state_dict(synthetic_state_dict(model, seed), strict=True)
    return f"synthetic:{RECIPE}:{seed}"

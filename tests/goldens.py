"""The golden weight recipe of ../shared/README.md: every tensor is a pure function of its key, shape and dtype."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import torch


def golden_tensor(key: str, shape: list[int], dtype: str) -> torch.Tensor:
    rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
    last = key.rsplit(".", 1)[-1]
    if dtype.startswith("int"):
        return torch.zeros(shape, dtype=getattr(torch, dtype))
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


def make_golden_state_dict(manifest: Path, form: str = "train_time") -> dict[str, torch.Tensor]:
    """State dict of the golden weights for a keys/*.json manifest (`train_time` or `reparameterized`)."""
    entries = json.loads(Path(manifest).read_text())[form]["state_dict"]
    return {key: golden_tensor(key, shape, dtype) for key, shape, dtype in entries}

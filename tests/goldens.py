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


# The reference manifest (keys/<stem>.json) listing each registry variant's native state dict.
NATIVE_MANIFEST = {
    "mobileclip-s0": "mobileclip_s0",
    "mobileclip-s1": "mobileclip_s1",
    "mobileclip-s2": "mobileclip_s2",
    "mobileclip-b": "mobileclip_b",
    "mobileclip-b-lt": "mobileclip_b",
    "mobileclip2-s0": "openclip_MobileCLIP2-S0",
    "mobileclip2-s2": "openclip_MobileCLIP2-S2",
    "mobileclip2-b": "openclip_MobileCLIP2-B",
    "mobileclip2-s3": "openclip_MobileCLIP2-S3",
    "mobileclip2-s4": "openclip_MobileCLIP2-S4",
    "mobileclip2-l-14": "openclip_MobileCLIP2-L-14",
}


def manifest_path(shared_dir: Path, stem: str) -> Path:
    return shared_dir / "reference" / "keys" / f"{stem}.json"


def load_manifest(shared_dir: Path, stem: str) -> dict:
    return json.loads(manifest_path(shared_dir, stem).read_text())


def placeholder_state_dict(manifest: Path, form: str = "train_time") -> dict[str, torch.Tensor]:
    """Zeros with a manifest's keys, shapes and dtypes, each a view of one element so saved files stay tiny.

    For checks that only look at names and shapes (layout detection, variant guessing, error messages).
    """
    entries = json.loads(Path(manifest).read_text())[form]["state_dict"]
    return {key: torch.zeros((), dtype=getattr(torch, dtype)).expand(shape) for key, shape, dtype in entries}

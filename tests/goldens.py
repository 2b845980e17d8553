"""The golden weight recipe of ../shared/README.md: every tensor is a pure function of its key, shape and dtype."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mobileclip_deploy.models.synthetic import recipe_tensor


def golden_tensor(key: str, shape: list[int], dtype: str) -> torch.Tensor:
    """The golden recipe is the library's synthetic-weight recipe at seed 0, before its text q/k change."""
    return recipe_tensor(key, shape, dtype, seed=0)


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

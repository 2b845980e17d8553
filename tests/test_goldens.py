"""Numerical parity with the official and open_clip implementations, through real checkpoint files.

The golden weights (recipe in ../shared/README.md) are written as the file a user would download, loaded with
`create_model(name, checkpoint=path)`, and run on the stored inputs; outputs must match the reference's, train-time
and folded. Relative error: max|ours - reference| / max|reference| over the whole output batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from goldens import make_golden_state_dict, manifest_path
from safetensors.torch import save_file

from mobileclip_deploy import create_model, reparameterize
from mobileclip_deploy.reparam import is_folded

pytestmark = pytest.mark.usefixtures("one_thread")

RTOL = 1e-4

# (golden file, keys manifest, registry name, checkpoint file name as distributed)
CASES = [
    ("mobileclip_s0", "mobileclip_s0", "mobileclip-s0", "mobileclip_s0.pt"),
    ("mobileclip_s2", "mobileclip_s2", "mobileclip-s2", "mobileclip_s2.pt"),
    ("openclip_MobileCLIP2-S2", "openclip_MobileCLIP2-S2", "mobileclip2-s2", "open_clip_model.safetensors"),
]


def rel_err(ours: torch.Tensor, reference: np.ndarray) -> float:
    ref = torch.from_numpy(reference)
    return ((ours - ref).abs().max() / ref.abs().max()).item()


@dataclass
class Run:
    golden: dict[str, np.ndarray]
    logit_scale: float
    train: dict[str, torch.Tensor]
    folded: dict[str, torch.Tensor]
    folded_ok: bool


def _encode(model: torch.nn.Module, golden: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        return {"image_features": model.encode_image(torch.from_numpy(golden["image"])),
                "text_features": model.encode_text(torch.from_numpy(golden["tokens"]))}


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def run(request: pytest.FixtureRequest, shared_dir: Path, module_tmp) -> Run:
    golden_name, stem, name, filename = request.param
    with np.load(shared_dir / "reference" / "goldens" / f"{golden_name}.npz") as npz:
        golden = {k: npz[k] for k in npz.files}
    state = make_golden_state_dict(manifest_path(shared_dir, stem))
    path = module_tmp(golden_name) / filename
    if path.suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)
    del state
    model = create_model(name, checkpoint=path)
    folded = reparameterize(model)
    return Run(golden, model.logit_scale.item(), _encode(model, golden), _encode(folded, golden), is_folded(folded))


@pytest.mark.parametrize("tower", ["image_features", "text_features"])
def test_train_time_matches_reference(run: Run, tower: str) -> None:
    assert run.train[tower].shape == run.golden[tower].shape
    assert rel_err(run.train[tower], run.golden[tower]) < RTOL


@pytest.mark.parametrize("tower", ["image_features", "text_features"])
def test_folded_matches_reference(run: Run, tower: str) -> None:
    """Folded outputs match the reference's folded outputs where stored, and its train-time outputs always."""
    assert run.folded_ok
    assert rel_err(run.folded[tower], run.golden[tower]) < RTOL
    if f"{tower}_reparameterized" in run.golden:
        assert rel_err(run.folded[tower], run.golden[f"{tower}_reparameterized"]) < RTOL


def test_logit_scale_loaded(run: Run) -> None:
    expected = float(run.golden["logit_scale"]) if "logit_scale" in run.golden else float(np.log(1 / 0.07))
    assert run.logit_scale == pytest.approx(expected, rel=1e-6)

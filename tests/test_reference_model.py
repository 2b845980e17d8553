"""`verify` and `diagnose` rebuild the PyTorch reference of an export: from its checkpoint, or, for `--random-weights`
exports, from the synthetic recipe and seed the manifest records, accepted only when the hash of the rebuilt folded
weights is the one every entry was exported with."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mobileclip_deploy import create_model, reparameterize
from mobileclip_deploy.cli.verify import reference_model
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters.pipeline import folded_weights_id

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported() -> tuple[dict, list[dict], torch.nn.Module]:
    folded = reparameterize(create_model("mobileclip-s0", synthetic_seed=3)).eval()
    manifest = {"model": "mobileclip-s0", "checkpoint_sha256": None, "weights": "synthetic:golden-qk2:3"}
    return manifest, [{"weights": f"random:{folded_weights_id(folded)}", "parity": {"inputs": "synthetic"}}], folded


def test_synthetic_weights_are_rebuilt_from_the_manifest(exported) -> None:
    manifest, entries, folded = exported
    variant, rebuilt = reference_model(Path("out"), manifest, entries, None, None, "x")
    assert variant.name == "mobileclip-s0"
    tokens = torch.randint(1, 1000, (2, variant.context_length))
    with torch.no_grad():
        assert torch.equal(rebuilt.encode_text(tokens), folded.encode_text(tokens))


@pytest.mark.parametrize(("change", "says"), [
    ({"weights": "synthetic:golden-qk2:4"}, "rebuilt here differ"),  # the seed does not give the exported weights
    ({"weights": "synthetic:golden-qk1:3"}, "cannot be rebuilt"),  # a recipe this version does not have
    ({"weights": "default-init"}, "cannot be rebuilt"),
])
def test_weights_that_cannot_be_the_exported_ones_are_refused(exported, change, says) -> None:
    manifest, entries, _ = exported
    with pytest.raises(UserError, match=says):
        reference_model(Path("out"), {**manifest, **change}, entries, None, None, "x")


def test_a_checkpoint_for_a_synthetic_export_is_refused(exported, tmp_path: Path) -> None:
    manifest, entries, _ = exported
    with pytest.raises(UserError, match="drop --checkpoint"):
        reference_model(Path("out"), manifest, entries, tmp_path / "s0.pt", None, "x")

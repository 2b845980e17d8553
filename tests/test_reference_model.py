"""`verify` and `diagnose` rebuild the PyTorch reference of an export: from its checkpoint, or, for `--random-weights`
exports, from the synthetic recipe and seed the manifest records, accepted only when the hash of the rebuilt folded
weights is the one each artifact was exported from (the manifest entry's `weights`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import registered
from rich.console import Console

from mobileclip_deploy import create_model, reparameterize
from mobileclip_deploy.cli.verify import reference_model
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters import pipeline
from mobileclip_deploy.exporters.backends import resolve_pairs
from mobileclip_deploy.registry import get_variant

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported(module_tmp) -> tuple[Path, dict]:
    """A real --random-weights export (S0 text tower, seed 3) through the test backend."""
    out = module_tmp("synthetic") / "out"
    with registered():
        request = pipeline.ExportRequest(pairs=resolve_pairs([], ["test-recording:fp32"]), output_dir=out,
                                         towers=("text",))
        (result,) = pipeline.run(request, create_model("mobileclip-s0", synthetic_seed=3),
                                 get_variant("mobileclip-s0"), None, Console(quiet=True))
    assert result.status == "ok", result.message
    return out, json.loads((out / "manifest.json").read_text())


def test_synthetic_weights_are_rebuilt_from_the_manifest(exported) -> None:
    out, manifest = exported
    assert manifest["weights"] == "synthetic:golden-qk2:3" and manifest["artifacts"][0]["weights"].startswith("random:")
    variant, rebuilt = reference_model(out, manifest, manifest["artifacts"], None, None, "x")
    folded = reparameterize(create_model("mobileclip-s0", synthetic_seed=3)).eval()
    tokens = torch.randint(1, 1000, (2, variant.context_length))
    with torch.no_grad():
        assert torch.equal(rebuilt.encode_text(tokens), folded.encode_text(tokens))


@pytest.mark.parametrize(("change", "says"), [
    ({"weights": "synthetic:golden-qk2:4"}, "rebuilt here differ"),  # the seed does not give the exported weights
    ({"weights": "synthetic:golden-qk1:3"}, "cannot be rebuilt"),  # a recipe this version does not have
    ({"weights": "default-init"}, "cannot be rebuilt"),
])
def test_weights_that_cannot_be_the_exported_ones_are_refused(exported, change, says) -> None:
    out, manifest = exported
    with pytest.raises(UserError, match=says):
        reference_model(out, {**manifest, **change}, manifest["artifacts"], None, None, "x")


def test_an_entry_without_its_weights_hash_and_a_checkpoint_are_refused(exported, tmp_path: Path) -> None:
    out, manifest = exported
    older = [{k: v for k, v in e.items() if k != "weights"} for e in manifest["artifacts"]]
    with pytest.raises(UserError, match="before its artifacts recorded the hash of their weights"):
        reference_model(out, manifest, older, None, None, "x")
    with pytest.raises(UserError, match="drop --checkpoint"):
        reference_model(out, manifest, manifest["artifacts"], tmp_path / "s0.pt", None, "x")

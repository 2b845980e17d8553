"""`--quant auto` for Core ML (exporters/autoquant_coreml.py): on a tower whose one block has outlier weights, the
search keeps exactly that block at 8-bit palettes; the score it chose by is what the written .mlpackage's weights
give; its recipe rebuilds the same weights through the export pipeline; an unreachable target is refused."""

from pathlib import Path

import pytest
import torch
from helpers import (
    TinyTower,
    assert_palette_plan_keeps_the_outlier_block,
    search_data,
)

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters import autoquant
from mobileclip_deploy.exporters import coreml as coreml_exp
from mobileclip_deploy.exporters.autoquant_coreml import search_coreml
from mobileclip_deploy.exporters.parity import compare

DIM = 64  # wide enough that the MLP weights (64x128) pass coremltools' 2048-element compression threshold


def _tower() -> torch.nn.Module:
    return TinyTower(outliers=True, dim=DIM).eval()


def _weights(package: Path) -> bytes:
    return (package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").read_bytes()


@pytest.fixture(scope="module")
def plan():
    images, anchors = search_data()
    return search_coreml(_tower(), torch.rand(1, 3, 16, 16), "image", "iOS18", images, anchors,
                         autoquant.Targets(0.999, 0.9), use_cache=False)


def test_search_keeps_only_the_block_with_outliers_at_8_bits(plan):
    assert plan.backend == "coreml"
    assert_palette_plan_keeps_the_outlier_block(plan)


def test_the_written_package_scores_what_the_search_scored(plan, tmp_path):
    images, _ = search_data()
    tower, example = _tower(), torch.rand(1, 3, 16, 16)
    meta = {"description": "tiny", "license": "test", "author": "test", "version": "0"}
    built = {}
    for name, keep in (("auto", plan.keep), ("hand", None)):
        path = tmp_path / f"{name}.mlpackage"
        facts = coreml_exp.export(tower, example, "image", "pal4", path, "iOS18", False, dict(meta), eight_bit=keep)
        built[name] = path
        if keep is not None:
            assert facts["kept_at_8_bits"] == keep and facts["kept_in_float"] == []
    proxy, coverage = coreml_exp.decompressed_tower(built["auto"], tower)
    with torch.no_grad():
        reference, out = (m(torch.from_numpy(images)).numpy() for m in (tower, proxy))
    assert coverage["weights_checked_fraction"] > 0.99
    assert compare(reference, out)["min_cosine"] == pytest.approx(plan.chosen["min_cosine"], abs=1e-6)
    # the size model: the weight file holds the estimated bytes, within alignment and the unpalettized tables
    assert abs(len(_weights(built["auto"])) - plan.chosen["size_bytes"]) < 0.15 * plan.chosen["size_bytes"]
    assert _weights(built["auto"]) != _weights(built["hand"])


def test_recipe_rebuilds_the_same_weights_through_the_pipeline(shared_dir, tmp_path):
    from helpers import TINY, auto_then_recipe

    run = auto_then_recipe(tmp_path, "coreml:auto", "image", shared_dir / "data" / "imagenet-samples")
    details, message = run.entry["details"], run.first.message
    assert run.entry["deployment_target"] == "iOS18" and details["kept_at_8_bits"] == run.plan["keep"]
    assert f"keeps {len(details['kept_at_8_bits'])} modules at 8 bits" in message
    assert f"{run.plan['chosen']['ratio_to_fp16']}x the fp16 weight size" in message and "not speed" not in message
    assert run.rebuilt["details"]["kept_at_8_bits"] == run.plan["keep"]
    assert _weights(tmp_path / "recipe" / run.again.file) == _weights(tmp_path / "auto" / run.first.file)
    assert TINY.name in run.first.file


def test_an_unreachable_target_is_refused_and_nothing_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILECLIP_DEPLOY_CACHE", str(tmp_path))
    images, anchors = search_data()
    with pytest.raises(UserError, match="no 4-bit palette plan of the image tower meets min cosine 1.0"):
        search_coreml(_tower(), torch.rand(1, 3, 16, 16), "image", "iOS18", images, anchors,
                      autoquant.Targets(1.0, 1.0))
    assert not list(tmp_path.rglob("*.json"))

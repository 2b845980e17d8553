"""`--quant auto` for Core AI (autoquant_coreml.search_coreai): on a tower whose one block has outlier weights, the
search keeps exactly that block at 8-bit palettes; the tower palettized as the plan says (coreai-opt, what the export
compresses) scores what the search assembled from its per-weight passes; its recipe rebuilds the same asset through
the export pipeline, whose gate runs it on Core AI's reference runtime; an unreachable target is refused."""

from __future__ import annotations

import copy
import json

import pytest
import torch

pytest.importorskip("coreai_opt")

from helpers import TinyTower, assert_palette_plan_keeps_the_outlier_block, search_data

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters import autoquant
from mobileclip_deploy.exporters.autoquant_coreml import search_coreai
from mobileclip_deploy.exporters.backends import coreai
from mobileclip_deploy.exporters.parity import compare

pytestmark = pytest.mark.usefixtures("one_thread")
DIM = 64  # output channels divisible by the palette group (16): every conv/linear but the 8-wide head is palettized
EXAMPLE = torch.rand(1, 3, 16, 16)


def _tower() -> torch.nn.Module:
    return TinyTower(outliers=True, dim=DIM).eval()


@pytest.fixture(scope="module")
def plan():
    images, anchors = search_data()
    return search_coreai(_tower(), EXAMPLE, "image", images, anchors, autoquant.Targets(0.999, 0.9), use_cache=False)


def test_search_keeps_only_the_block_with_outliers_at_8_bits(plan):
    assert plan.backend == "coreai"
    assert_palette_plan_keeps_the_outlier_block(plan)
    assert "head" not in {u["unit"] for u in plan.units}  # head: 8 rows, not palettized


def test_the_plan_palettized_by_coreai_opt_scores_what_the_search_scored(plan):
    """The search assembles candidates from two whole-tower passes; the export palettizes once with the plan's
    8-bit modules: the same weights, so the same score (and without the 8-bit block the target is missed)."""
    images, _ = search_data()
    tower = _tower()
    with torch.no_grad():
        reference = tower(torch.from_numpy(images)).numpy()
        scores = {}
        for name, keep in (("plan", plan.keep), ("all 4-bit", [])):
            palettized = copy.deepcopy(tower)
            coreai._palettizer(palettized, 4, EXAMPLE, keep)
            scores[name] = compare(reference, palettized(torch.from_numpy(images)).numpy())["min_cosine"]
    assert scores["plan"] == pytest.approx(plan.chosen["min_cosine"], abs=1e-6)
    assert scores["all 4-bit"] < 0.999


def test_recipe_rebuilds_the_same_asset_through_the_pipeline(shared_dir, tmp_path):
    from helpers import TINY, auto_then_recipe

    run = auto_then_recipe(tmp_path, "coreai:auto", "image", shared_dir / "data" / "imagenet-samples")
    assert run.entry["parity"]["check"] == "coreai_reference_runtime"
    assert run.entry["details"]["kept_at_8_bits"] == run.plan["keep"]
    assert f"{run.plan['chosen']['ratio_to_fp16']}x the fp16 weight size" in run.first.message
    assert run.rebuilt["details"]["kept_at_8_bits"] == run.plan["keep"]
    # one process: the weight-blob names agree (see backends/coreai.py), so the programs are byte-identical
    program = [(folder / name / "main.mlirb").read_bytes() for folder, name in
               ((tmp_path / "auto", run.first.file), (tmp_path / "recipe", run.again.file))]
    assert program[0] == program[1]
    assert coreai.read_metadata(tmp_path / "auto" / run.first.file)["scheme"] == "pal4"  # what the file is built as
    assert TINY.name in run.first.file and json.loads(coreai.read_metadata(
        tmp_path / "recipe" / run.again.file)["embed_dim"]) == TINY.embed_dim


def test_an_unreachable_target_is_refused_and_nothing_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILECLIP_DEPLOY_CACHE", str(tmp_path))
    images, anchors = search_data()
    with pytest.raises(UserError, match="no 4-bit palette plan of the image tower meets min cosine 1.0"):
        search_coreai(_tower(), EXAMPLE, "image", images, anchors, autoquant.Targets(1.0, 1.0))
    assert not list(tmp_path.rglob("*.json"))

"""`--quant auto` for ExecuTorch XNNPACK (exporters/autoquant_xnnpack.py) on the tiny tower of helpers.py:
the search keeps float the block made sensitive on purpose (and the depthwise convs, as w8a8 does) and nothing
else, the runtime confirms the chosen plan, and its recipe rebuilds the same .pte."""

import copy
import gc
import weakref

import numpy as np
import pytest
import torch
from helpers import OUTLIER_BLOCK, TinyTower, search_data
from torch import nn

from mobileclip_deploy import runtimes
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters import autoquant
from mobileclip_deploy.exporters import executorch as et_exp
from mobileclip_deploy.exporters.autoquant_xnnpack import (
    search_and_export,
    search_executorch,
)
from mobileclip_deploy.exporters.recipe import load_recipe
from mobileclip_deploy.exporters.sensitive import float_modules
from mobileclip_deploy.hashing import sha256_path


@pytest.fixture(scope="module")
def searched(module_tmp):
    """The plan, the .pte the search left for it and that .pte's export facts."""
    images, anchors = search_data()
    pte = module_tmp("search") / "chosen.pte"
    plan, facts = search_and_export(TinyTower(outliers=True).eval(), torch.rand(1, 3, 16, 16), "image", images,
                                    images, anchors, autoquant.Targets(0.999, 0.9), pte, use_cache=False)
    return plan, pte, facts


@pytest.fixture(scope="module")
def plan(searched):
    return searched[0]


def test_search_keeps_only_the_sensitive_block_and_the_depthwise_convs_float(plan):
    assert plan.backend == "executorch-xnnpack"
    assert [n for n in plan.keep if n.endswith(".mlp")] == [f"blocks.{OUTLIER_BLOCK}.mlp"]
    assert sorted(n for n in plan.keep if n.endswith(".mixer")) == [f"blocks.{i}.mixer" for i in range(4)]
    assert set(plan.keep) == {f"blocks.{OUTLIER_BLOCK}.mlp", *(f"blocks.{i}.mixer" for i in range(4))}
    units = {u["unit"]: u for u in plan.units}
    assert set(units) == {"stem", "head", *(f"blocks.{i}.mlp" for i in range(4))}  # depthwise mixers are forced
    worst = min(units.values(), key=lambda u: u["min_cosine"])
    assert worst["unit"] == f"blocks.{OUTLIER_BLOCK}.mlp" and worst["min_cosine"] < 0.999
    assert all(u["min_cosine"] > 0.999 for name, u in units.items() if name != worst["unit"])


def test_the_runtime_confirms_the_chosen_plan(plan):
    chosen = plan.chosen
    assert chosen["scored_on"] == "executorch_runtime"
    assert chosen["min_cosine"] >= 0.999 and chosen["top1_agreement"] >= 0.9
    assert set(chosen["candidates"]) >= {"fp32", "auto"} and chosen["latency_ms"] > 0


def test_recipe_rebuilds_the_same_pte(searched, tmp_path):
    """...and the same .pte as the search exported, confirmed and handed to the pipeline."""
    plan, searched_pte, searched_facts = searched
    recipe_path = tmp_path / "tiny.recipe.toml"
    recipe_path.write_text(autoquant.recipe_text(plan, "tiny", tmp_path, 12))
    recipe = load_recipe(recipe_path)
    assert recipe.quants == ["executorch-xnnpack:w8a8"]
    assert recipe.keep == {"executorch-xnnpack": {"image": plan.keep}}
    images, _ = search_data()
    tower, example = TinyTower(outliers=True).eval(), torch.rand(1, 3, 16, 16)
    assert plan.keep != float_modules(tower)  # the plan is not the hand-written list w8a8 keeps float
    rebuilt = tmp_path / "recipe.pte"
    facts, _ = et_exp.export(tower, example, "w8a8", "xnnpack", rebuilt, images,
                             keep=recipe.keep["executorch-xnnpack"]["image"])
    assert facts["kept_in_float"] == plan.keep and sha256_path(rebuilt) == sha256_path(searched_pte)
    hand, _ = et_exp.export(tower, example, "w8a8", "xnnpack", tmp_path / "hand.pte", images)
    assert hand["kept_in_float"] == float_modules(tower)
    assert sha256_path(tmp_path / "hand.pte") != sha256_path(rebuilt)  # the keep list reaches the artifact
    assert searched_facts["kept_in_float"] == plan.keep and searched_facts["delegation"]["partitions"] > 0
    run = runtimes.load(rebuilt)
    reference = tower(torch.from_numpy(images[:1])).detach().numpy()
    out = run(images[:1])
    cos = float((reference * out).sum() / np.linalg.norm(reference) / np.linalg.norm(out))
    assert cos > 0.999


def test_a_quantized_copy_is_freed_with_its_last_reference():
    """The search quantizes dozens of copies of one export; PT2E's caches once kept every one alive (~55 MB each
    for S0's image tower)."""
    images, _ = search_data()
    graph = torch.export.export(TinyTower(outliers=True).eval(), (torch.rand(1, 3, 16, 16),)).module()
    given = copy.deepcopy(graph)
    quantized = et_exp.static_int8(given, images[:2], [])
    assert any("quantize" in str(n.target) for n in quantized.graph.nodes)
    refs = [weakref.ref(given), weakref.ref(quantized)]
    del given, quantized
    gc.collect()
    assert [r() for r in refs] == [None, None]


@pytest.mark.parametrize("keep", [[], [f"blocks.{OUTLIER_BLOCK}.mlp"], ["stem", "blocks.0", "head"]])
def test_ranges_calibrated_once_give_each_plan_the_model_its_own_calibration_gives(keep):
    images, _ = search_data()
    graph = torch.export.export(TinyTower(outliers=True).eval(), (torch.rand(1, 3, 16, 16),)).module()
    ranges = et_exp.calibrated_ranges(copy.deepcopy(graph), images)
    assert et_exp._fill_ranges(et_exp._prepared(copy.deepcopy(graph), keep), ranges)  # the copy, not a fallback
    x = torch.from_numpy(images[:1])
    own = et_exp.static_int8(copy.deepcopy(graph), images, keep)(x)
    # Given the ranges, the plan's calibration inputs go unused: one photo gives the 12 photos' model...
    copied = et_exp.static_int8(copy.deepcopy(graph), images[:1], keep, ranges)(x)
    torch.testing.assert_close(copied, own, rtol=0, atol=0)
    # ...which calibrating on that photo alone does not.
    assert not torch.equal(et_exp.static_int8(copy.deepcopy(graph), images[:1], keep)(x), own)


def test_unreachable_target_is_refused_and_nothing_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILECLIP_DEPLOY_CACHE", str(tmp_path))
    images, anchors = search_data()
    with pytest.raises(UserError, match="no int8 plan of the image tower meets min cosine 1.0"):
        search_executorch(TinyTower(outliers=True).eval(), torch.rand(1, 3, 16, 16), "image", images, images,
                          anchors, autoquant.Targets(1.0, 1.0))
    assert not list(tmp_path.rglob("*.json"))


class LinearTower(nn.Module):
    """tokens-like input (1x8x32) -> embedding (1x8): MLP blocks of nn.Linear, the only layers 8da8w quantizes; one
    hidden channel of block OUTLIER_BLOCK is 1000x larger (undone by fc2), which swamps per-token int8 steps."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(nn.ModuleDict({"fc1": nn.Linear(dim, 2 * dim), "fc2": nn.Linear(2 * dim, dim)})
                                    for _ in range(4))
        self.head = nn.Linear(dim, 8)
        with torch.no_grad():
            mlp = self.blocks[OUTLIER_BLOCK]
            mlp["fc1"].weight[0] *= 1000
            mlp["fc1"].bias[0] *= 1000
            mlp["fc2"].weight[:, 0] /= 1000

    def forward(self, x):
        for mlp in self.blocks:
            x = x + mlp["fc2"](torch.nn.functional.gelu(mlp["fc1"](x)))
        return self.head(x.mean(dim=1))


def test_dynamic_search_keeps_the_sensitive_linear_float_and_its_recipe_rebuilds_the_pte(tmp_path, monkeypatch):
    """Also: the .pte the search hands over and the one a cached plan is exported again as are the recipe's."""
    monkeypatch.setenv("MOBILECLIP_DEPLOY_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((12, 8, 32)).astype(np.float32)
    anchors = rng.standard_normal((6, 8)).astype(np.float32)
    tower, example = LinearTower().eval(), torch.from_numpy(inputs[:1])
    steps: list[str] = []
    handed = [tmp_path / "searched.pte", tmp_path / "from_cache.pte"]
    for pte in handed:
        plan, _ = search_and_export(tower, example, "text", inputs, inputs, anchors, autoquant.Targets(0.999, 0.9),
                                    pte, steps.append, scheme="8da8w")
    assert steps.count("auto: reusing the cached search") == 1 and steps[-1] == "exporting the chosen plan"
    assert "exporting the chosen plan" not in steps[:-1]
    # fc2 reads the outlier channel, so it alone loses precision; fc1 (whose weights hold the outlier) does not
    assert plan.scheme == "8da8w" and plan.keep == [f"blocks.{OUTLIER_BLOCK}.fc2"]
    units = {u["unit"]: u for u in plan.units}
    assert set(units) == {"head", *(f"blocks.{i}.fc{j}" for i in range(4) for j in (1, 2))}
    worst = min(units.values(), key=lambda u: u["min_cosine"])
    assert worst["unit"] == f"blocks.{OUTLIER_BLOCK}.fc2" and worst["min_cosine"] < 0.999
    assert plan.chosen["scored_on"] == "executorch_runtime" and plan.chosen["min_cosine"] >= 0.999
    recipe_path = tmp_path / "tiny.recipe.toml"
    recipe_path.write_text(autoquant.recipe_text(plan, "tiny", tmp_path, 12))
    recipe = load_recipe(recipe_path)
    assert recipe.quants == ["executorch-xnnpack:8da8w"]
    rebuilt = tmp_path / "recipe.pte"
    facts, _ = et_exp.export(tower, example, "8da8w", "xnnpack", rebuilt, None,
                             keep=recipe.keep["executorch-xnnpack"]["text"])
    assert facts["kept_in_float"] == plan.keep
    assert [sha256_path(p) for p in handed] == [sha256_path(rebuilt)] * 2
    every, _ = et_exp.export(tower, example, "8da8w", "xnnpack", tmp_path / "all.pte", None)
    assert every["kept_in_float"] == [] and sha256_path(tmp_path / "all.pte") != sha256_path(rebuilt)


def test_pipeline_writes_the_dynamic_plan_and_its_recipe(shared_dir, tmp_path):
    from helpers import entries, export

    photos = shared_dir / "data" / "imagenet-samples"
    results = export(tmp_path / "out", ["executorch:auto-8da8w"], towers=("text",), calibration=photos,
                     calibration_limit=8, min_agreement=0.9)
    assert [r.status for r in results] == ["ok"], results
    entry = entries(tmp_path / "out")[results[0].file]
    plan = entry["details"]["auto_plan"]
    assert plan["scheme"] == "8da8w" and entry["details"]["kept_in_float"] == plan["keep"]
    assert plan["chosen"]["scored_on"] == "executorch_runtime" and entry["parity"]["passed"]
    assert f"keeps {len(plan['keep'])} modules float" in results[0].message
    assert f"{plan['chosen']['ratio_to_fp32']}x the fp32 latency on this host" in results[0].message
    recipe = load_recipe(tmp_path / "out" / entry["details"]["recipe"])
    assert recipe.quants == ["executorch-xnnpack:8da8w"] and recipe.calibration == photos.resolve()
    assert recipe.keep == {"executorch-xnnpack": {"text": plan["keep"]}}

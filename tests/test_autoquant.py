"""`--quant auto` (exporters/autoquant.py) on a tiny conv tower: the search keeps float the layer made sensitive on
purpose and nothing else, its recipe rebuilds the same artifact, and an unreachable target is refused."""

from pathlib import Path

import helpers
import pytest
import torch
from helpers import OUTLIER_BLOCK, TinyTower, search_data
from torch import nn

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters import autoquant
from mobileclip_deploy.exporters import onnx as onnx_exp
from mobileclip_deploy.exporters.recipe import load_recipe
from mobileclip_deploy.hashing import sha256_path

REPO_PHOTOS = Path("photos")  # only checked for presence by frontier_pair


def _search(tower, targets, **kw):
    images, anchors = search_data()
    return autoquant.search_onnx(tower.eval(), torch.rand(1, 3, 16, 16), "image", images, images, anchors, targets,
                                 use_cache=False, **kw)


@pytest.fixture(scope="module")
def plan():
    return _search(TinyTower(outliers=True), autoquant.Targets(0.999, 0.9))


def test_search_keeps_only_the_layer_with_outliers_float(plan):
    mlps = [name for name in plan.keep if name.endswith(".mlp")]
    assert mlps == [f"blocks.{OUTLIER_BLOCK}.mlp"]
    units = {u["unit"]: u for u in plan.units}
    worst = min(units.values(), key=lambda u: u["min_cosine"])
    assert worst["unit"] == f"blocks.{OUTLIER_BLOCK}.mlp" and worst["min_cosine"] < 0.999
    assert any(u.startswith("/") for u in units)  # the tower's own matmul is a unit, not the whole tower
    assert plan.chosen["min_cosine"] >= 0.999 and plan.chosen["top1_agreement"] >= 0.9


def test_unreachable_target_is_refused_and_nothing_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILECLIP_DEPLOY_CACHE", str(tmp_path))
    images, anchors = search_data()
    with pytest.raises(UserError, match="no int8 plan of the image tower meets min cosine 1.0"):
        autoquant.search_onnx(TinyTower(outliers=True).eval(), torch.rand(1, 3, 16, 16), "image", images, images,
                              anchors, autoquant.Targets(1.0, 1.0))
    assert not list(tmp_path.rglob("*.json"))


def test_the_summary_says_when_int8_does_not_pay_on_this_host(plan):
    from dataclasses import replace

    for ratio, pays in ((0.5, True), (0.96, False), (1.02, False)):
        line = autoquant.plan_summary(replace(plan, chosen={**plan.chosen, "ratio_to_fp32": ratio}))
        assert f"keeps {len(plan.keep)} modules float" in line and f"{ratio}x the fp32 latency on this host" in line
        assert f"min cosine {plan.chosen['min_cosine']:.5f}" in line
        assert ("buys size, not speed" not in line) == pays, line


def test_recipe_rebuilds_the_same_artifact(plan, tmp_path):
    tower = TinyTower(outliers=True).eval()
    recipe_path = tmp_path / "tiny.recipe.toml"
    recipe_path.write_text(autoquant.recipe_text(plan, "tiny", tmp_path, 12))
    recipe = load_recipe(recipe_path)
    assert recipe.quants == ["onnx:w8a8"] and recipe.tower == "image" and recipe.calibration_limit == 12
    assert recipe.keep == {"onnx": {"image": plan.keep}}
    images, _ = search_data()
    example = torch.rand(1, 3, 16, 16)
    built = []
    for name, keep in (("auto", plan.keep), ("recipe", recipe.keep["onnx"]["image"])):
        work = tmp_path / name
        work.mkdir()
        onnx_exp.export(tower, example, "image", "w8a8", work / "m.onnx", images, work, keep=keep)
        built.append(work / "m.onnx")
    assert sha256_path(built[0]) == sha256_path(built[1])
    import onnx

    model = onnx.load(str(built[0]))
    quantized = {n.name for n in model.graph.node if n.op_type == "Conv"
                 and any(i.endswith("_DequantizeLinear_Output") for i in n.input[1:2])}
    # every conv outside the kept block is quantized, none inside it
    assert quantized and all("blocks.2.mlp" not in n for n in quantized)


def refusal(*args) -> str:
    """`export --random-weights ...`'s refusal (one line, unwrapped)."""
    return helpers.refusal("export", "--random-weights", *args)


def test_cli_refuses_bad_auto_requests_before_any_work(shared_dir, tmp_path):
    photos, out = shared_dir / "data" / "imagenet-samples", tmp_path / "out"
    from typer.testing import CliRunner

    from mobileclip_deploy.cli import app

    result = CliRunner().invoke(app, ["export", "--random-weights", "-q", "onnx:auto", "--calibration", str(photos),
                                      "--min-cos", "1.5", "-o", str(out)])
    assert result.exit_code == 2 and "--min-cos" in result.stderr and "less than or equal to 1" in result.stderr
    assert "needs --calibration DIR" in refusal("-q", "onnx:auto", "-o", out)
    recipe = tmp_path / "r.toml"
    recipe.write_text('[formats.executorch]\nschemes = ["8da4w"]\n[formats.executorch.keep_float]\nimage = ["x"]\n')
    assert ("keep_float (a --quant auto recipe) for executorch-xnnpack applies to its 8da8w or w8a8"
            ) in refusal("--recipe", recipe, "--calibration", photos, "-o", out)
    recipe.write_text('[formats.onnx]\nschemes = ["w8a8"]\n[formats.onnx.keep_8bit]\nimage = ["x"]\n')
    assert "`keep_8bit` does not apply to onnx; onnx takes `keep_float`" in refusal(
        "--recipe", recipe, "--calibration", photos, "-o", out)
    assert not out.exists()


def test_frontier_draws_the_auto_plan_with_photos_and_says_so_without():
    from mobileclip_deploy.bench.sweep import (
        CALIBRATED_SCHEMES,
        frontier_pair,
        int8_note,
    )

    assert [frontier_pair(f"{b}:{s}", calibration=REPO_PHOTOS) for b, s in CALIBRATED_SCHEMES] == [
        ("onnx", "fp32"), ("onnx", "auto")]
    with pytest.raises(UserError, match="calibration"):
        frontier_pair("onnx:auto")
    assert "onnx auto" in int8_note(True) and "8da8w" in int8_note(False) and "--calibration" in int8_note(False)


class _RuntimeDisagrees:
    """A search whose runtime loses twice the simulated cosine: the simulation's plan fails there."""

    backend, tower, module = "fake", "image", nn.Module()
    scheme, kind, kept_as, baseline, cost_name = "w8a8", "int8", "float", "fp32", "latency_ms"
    errors = {"n0": 8e-4, "n1": 4e-4, "n2": 2e-4, "n3": 1e-4}  # cosine each unit costs when quantized

    def __init__(self, runtime_factor: float) -> None:
        self.runtime_factor = runtime_factor

    def units(self):
        return {f"u{i}": [f"n{i}"] for i in range(4)}, []

    def nodes_in(self, modules):
        return modules

    def _cos(self, exclude, factor):
        return {"min_cosine": 1 - factor * sum(e for n, e in self.errors.items() if n not in exclude),
                "top1_agreement": 1.0}

    def score(self, exclude):
        return self._cos(exclude, 1.0)

    def confirm(self, exclude):
        return {**self._cos(exclude, self.runtime_factor), "on": "fake_runtime"}

    def hand_written(self):
        return []

    def cost(self, candidates):
        return {name: 10.0 if nodes is None else 5.0 for name, nodes in candidates.items()}


def test_where_the_runtime_misses_the_simulated_plan_more_units_stay_float():
    # simulated: u0 float is enough (cosine 0.9993); on the runtime it gives 0.9986, u0+u1 give 0.9994
    plan = autoquant._search(_RuntimeDisagrees(2.0), autoquant.Targets(0.999, 0.9), lambda _: None)
    assert plan.keep == ["u0", "u1"]
    assert plan.chosen["scored_on"] == "fake_runtime" and plan.chosen["min_cosine"] >= 0.999
    assert [s["float_units"] for s in plan.steps if s.get("on") == "fake_runtime"] == [2]
    with pytest.raises(UserError, match="on the fake runtime"):
        autoquant._search(_RuntimeDisagrees(100.0), autoquant.Targets(0.999, 0.9), lambda _: None)

"""`--quant auto` for LiteRT (exporters/autoquant_litert.py): on a tiny conv tower whose one block has outlier
weights, the search keeps exactly that block float, scored on LiteRT's runtime; the written `.tflite` keeps those
ops float and every other conv/linear in int8, and scores what the search scored; its recipe rebuilds the same bytes
through the export pipeline; an unreachable target is refused."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("litert_torch")

from helpers import OUTLIER_BLOCK, TinyTower, search_data

from mobileclip_deploy import runtimes
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters import autoquant
from mobileclip_deploy.exporters.autoquant_litert import search_litert
from mobileclip_deploy.exporters.backends import litert
from mobileclip_deploy.exporters.parity import compare
from mobileclip_deploy.hashing import sha256_path

pytestmark = pytest.mark.usefixtures("one_thread")
EXAMPLE = torch.rand(1, 3, 16, 16)


def _tower() -> torch.nn.Module:
    return TinyTower(outliers=True).eval()


@pytest.fixture(scope="module")
def plan():
    images, anchors = search_data()
    return search_litert(_tower(), EXAMPLE, "image", images, images, anchors, autoquant.Targets(0.999, 0.9),
                         use_cache=False)


def test_search_keeps_only_the_block_with_outliers_float(plan):
    assert plan.backend == "litert" and plan.scheme == "w8a8" and plan.keep == [f"blocks.{OUTLIER_BLOCK}.mlp"]
    units = {u["unit"]: u for u in plan.units}
    assert {f"blocks.{i}.mlp" for i in range(4)} | {"stem", "head"} <= set(units)
    assert "/FULLY_CONNECTED_0" in units  # the tower's own matmul is a unit of its own, not the whole tower
    worst = min(units.values(), key=lambda u: u["min_cosine"])
    assert worst["unit"] == f"blocks.{OUTLIER_BLOCK}.mlp" and worst["min_cosine"] < 0.999
    assert all(u["min_cosine"] > 0.999 for name, u in units.items() if name != worst["unit"])
    assert plan.steps[0]["float_units"] == 0 and plan.steps[0]["min_cosine"] < 0.999  # all int8 misses the target
    chosen = plan.chosen
    assert chosen["min_cosine"] >= 0.999 and chosen["top1_agreement"] >= 0.9 and chosen["scored_on"] == "litert"
    assert chosen["latency_ms"] > 0 and chosen["fp32_latency_ms"] > 0


def _weight_types(path) -> dict[str, str]:
    """Owning module path -> weight tensor type of each conv/linear in a `.tflite` (INT8 when quantized)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = flatbuffer_utils.read_model(str(path))
    graph = model.subgraphs[0]
    found = {}
    for op, (_, owner, key) in zip((o for o in graph.operators if flatbuffer_utils.opcode_to_name(
            model, o.opcodeIndex) in litert.STATIC_OPS), litert.static_ops(path, _tower())):
        found[owner or key] = types[graph.tensors[op.inputs[1]].type]
    return found


def test_the_written_tflite_keeps_the_plan_float_and_scores_what_the_search_scored(plan, tmp_path):
    images, _ = search_data()
    path = tmp_path / "auto.tflite"
    facts = litert.export(_tower(), EXAMPLE, "image", "w8a8", path, tmp_path, {"scheme": "w8a8"}, images,
                          keep=plan.keep)
    assert facts["kept_in_float"] == plan.keep
    types = _weight_types(path)
    kept = {o: t for o, t in types.items() if o.startswith(f"blocks.{OUTLIER_BLOCK}.mlp")}
    assert sorted(kept) == [f"blocks.{OUTLIER_BLOCK}.mlp.fc1", f"blocks.{OUTLIER_BLOCK}.mlp.fc2"]
    assert set(kept.values()) == {"FLOAT32"}
    others = {o: t for o, t in types.items() if o not in kept}
    assert len(others) == 9 and set(others.values()) == {"INT8"}, types  # stem, 6 other MLP convs, head, proj
    with torch.no_grad():
        reference = _tower()(torch.from_numpy(images)).numpy()
    out = runtimes.load(path).batched(images)
    assert compare(reference, out)["min_cosine"] == pytest.approx(plan.chosen["min_cosine"], abs=1e-6)


def test_recipe_rebuilds_the_same_tflite_through_the_pipeline(shared_dir, tmp_path):
    from helpers import TINY, auto_then_recipe

    run = auto_then_recipe(tmp_path, "litert:auto", "text", shared_dir / "data" / "imagenet-samples")
    assert run.entry["details"]["kept_in_float"] == run.plan["keep"]
    assert f"keeps {len(run.plan['keep'])} modules float" in run.first.message
    assert run.rebuilt["details"]["kept_in_float"] == run.plan["keep"]
    assert run.rebuilt["sha256"] == run.entry["sha256"] == sha256_path(tmp_path / "auto" / run.first.file)
    assert TINY.name in run.first.file


def test_an_unreachable_target_is_refused_and_nothing_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILECLIP_DEPLOY_CACHE", str(tmp_path))
    images, anchors = search_data()
    with pytest.raises(UserError, match="no int8 plan of the image tower meets min cosine 1.0"):
        search_litert(_tower(), EXAMPLE, "image", images, images, anchors, autoquant.Targets(1.0, 1.0))
    assert not list(tmp_path.rglob("*.json"))

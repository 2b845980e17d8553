"""Core AI fp16 precision repair: Core AI's reference runtime accumulates fp16 matrix products in fp16, so a tower
with a long positive sum (here a planted 4097-term one, which fp16 accumulation stalls at 2048) fails the fp16 gate;
the export measures each module's error on that runtime, keeps the worst in fp32 and passes, naming the module; the
recipe it writes rebuilds the same program, and a recipe naming no module of the tower is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, WEIGHTS, synthetic_tiny_model
from rich.console import Console
from torch import nn

pytest.importorskip("coreai_torch")

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters import coreai_fp16, pipeline
from mobileclip_deploy.exporters.backends import coreai, resolve_pairs
from mobileclip_deploy.exporters.recipe import load_recipe
from mobileclip_deploy.exporters.wrappers import Float16Compute, Float32Island
from mobileclip_deploy.runtimes.coreai import load

pytestmark = pytest.mark.usefixtures("one_thread")
FAN_IN = 4097  # the reference note's sum: fp16 accumulation of 4097 ones gives 2048
PLANTED = "model.visual.trunk.1.total"  # the accumulating product, as a module path of the image tower


class Product(nn.Module):
    """A 4097-term matrix product minus 4097. Not an `nn.Linear`: the Core AI export writes those as 1x1
    convolutions, which the reference runtime accumulates in fp32 (the precision a product kept as one lacks)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(FAN_IN, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight - float(FAN_IN)


class LongSum(nn.Module):
    """Adds to the embedding a term that depends on it through a 4097-term sum of values near 1 (minus 4097): fp32
    gives a few hundred either way, fp16 accumulation stalls near 2048 and gives about -2000."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.total = Product()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        near_one = 1 + 0.5 * torch.tanh(y)
        spread = near_one.repeat(1, -(-FAN_IN // y.shape[1]))[:, :FAN_IN]
        return y + 1e-3 * self.total(spread)


def planted_model() -> nn.Module:
    model = synthetic_tiny_model()
    model.visual.trunk = nn.Sequential(model.visual.trunk, LongSum(TINY.embed_dim))
    return model.eval()


def run(out: Path, **options):
    request = pipeline.ExportRequest(pairs=resolve_pairs([], ["coreai:fp16"]), output_dir=out, towers=("image",),
                                     **options)
    (result,) = pipeline.run(request, planted_model(), TINY, WEIGHTS, Console(quiet=True))
    return result


def entry(out: Path, result) -> dict:
    import json

    return next(e for e in json.loads((out / "manifest.json").read_text())["artifacts"] if e["file"] == result.file)


def test_an_island_computes_in_fp32_on_the_reference_runtime(tmp_path: Path) -> None:
    """The mechanism: the sum of 4097 ones is 2048 in the fp16 program, and 4096 (4097 in fp16) with the linear as an
    fp32 island; the island's module is the original, in float32, between casts."""
    module = nn.Sequential(nn.Identity(), nn.Linear(FAN_IN, 1, bias=False)).eval()
    nn.init.ones_(module[1].weight)
    x = torch.ones(1, FAN_IN)
    sums = []
    for keep in [(), ("1",)]:
        path = tmp_path / f"sum{len(keep)}.aimodel"
        coreai.save(coreai.program(module, x, "image", fp16=True, keep_fp32=keep), path, {})
        runner = load(path)
        sums.append(float(runner.run(x.numpy()).item()))
    assert sums == [2048.0, 4096.0]
    wrapped = Float16Compute(module, ["1"])
    assert isinstance(wrapped.tower[1], Float32Island) and wrapped.tower[1].module.weight.dtype == torch.float32


def test_exports_write_linear_layers_as_convolutions_which_accumulate_in_fp32(tmp_path: Path) -> None:
    """The same 4097-term linear, exported as the backend exports towers (a 1x1 convolution under the same path),
    sums to 4096 in the fp16 program without an island; the rewrite computes what the linear did, on any batch."""
    module = nn.Sequential(nn.Identity(), nn.Linear(FAN_IN, 1, bias=False)).eval()
    nn.init.ones_(module[1].weight)
    swapped = coreai.linears_as_convs(module)
    assert isinstance(swapped[1], coreai.LinearAsConv) and type(module[1]) is nn.Linear  # the tower itself unchanged
    layer = nn.Linear(24, 40).eval()
    rows = torch.randn(2, 5, 24)
    torch.testing.assert_close(coreai.LinearAsConv(layer)(rows), layer(rows), rtol=1e-5, atol=1e-5)
    x = torch.ones(1, FAN_IN)
    coreai.export_asset(module, x, "image", "fp16", tmp_path / "sum.aimodel", {})
    assert float(load(tmp_path / "sum.aimodel").run(x.numpy()).item()) == 4096.0


@pytest.fixture(scope="module")
def repaired(module_tmp):
    out = module_tmp("repaired")
    return out, run(out)


def test_the_planted_sum_fails_fp16_without_the_repair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no rounds the gate's verdict stands: the planted module breaks the fp16 program on Core AI's runtime."""
    monkeypatch.setattr(coreai_fp16, "ROUNDS", 0)
    result = run(tmp_path / "plain")
    assert result.status == "failed" and "parity failed (coreai_reference_runtime)" in result.message
    assert "below the fp16 limit" in result.message and PLANTED in result.message  # diagnose names it too


def test_the_repair_keeps_the_planted_module_in_fp32_and_passes(repaired) -> None:
    out, result = repaired
    assert result.status == "ok", result.message
    details = entry(out, result)["details"]
    assert details["kept_fp32"] == [PLANTED]  # the planted sum alone: the rest of the tower stays fp16
    (first,) = details["fp16_repair"]
    assert first["before"]["passed"] is False and first["after"]["passed"] is True
    assert entry(out, result)["parity"]["passed"] and entry(out, result)["parity"]["centered_cosine"] >= 0.9995


def test_the_recipe_rebuilds_the_repaired_asset(repaired, tmp_path: Path) -> None:
    """The written recipe names the kept modules; exporting from it rebuilds the same program (weights and graph,
    `main.mlirb`, whatever address-space randomization does to blob names: compared after the rebuild's own gate)."""
    out, result = repaired
    first = entry(out, result)
    recipe = load_recipe(out / first["details"]["recipe"])
    assert recipe.quants == ["coreai:fp16"]
    assert recipe.options == {"coreai": {"keep_fp32": {"image": first["details"]["kept_fp32"]}}}
    again = run(tmp_path / "rebuilt", format_options=recipe.options)
    assert again.status == "ok", again.message
    rebuilt = entry(tmp_path / "rebuilt", again)
    assert rebuilt["details"]["kept_fp32"] == first["details"]["kept_fp32"] and "fp16_repair" not in rebuilt["details"]
    assert rebuilt["cache_key"] != first["cache_key"]  # a recipe's islands are part of what shapes the asset
    if first["details"]["byte_reproducible"] and rebuilt["details"]["byte_reproducible"]:
        assert rebuilt["sha256"] == first["sha256"]
    else:
        assert _program(tmp_path / "rebuilt" / again.file) == _program(out / result.file)


def _program(path: Path) -> str:
    """The asset's program as text with the address-seeded weight blob names numbered in order of appearance."""
    import re

    from coreai.authoring.asset import AIModelAsset

    text = str(AIModelAsset.load(str(path)).program._module._mlir_module)
    names: dict[str, str] = {}
    return re.sub(r"resource_[0-9a-f]+(_\d+)?", lambda m: names.setdefault(m[0], f"blob{len(names)}"), text)


def test_unknown_modules_and_other_schemes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="names 'model.visual.trunk.1.totl', which is no module of the image tower"):
        run(tmp_path / "typo", format_options={"coreai": {"keep_fp32": {"image": ["model.visual.trunk.1.totl"]}}})
    request = pipeline.ExportRequest(pairs=resolve_pairs([], ["coreai:fp32"]), output_dir=tmp_path / "fp32",
                                     towers=("image",), format_options={"coreai": {"keep_fp32": {"image": [PLANTED]}}})
    with pytest.raises(UserError, match="keep_fp32 applies to coreai fp16"):
        pipeline.run(request, planted_model(), TINY, WEIGHTS, Console(quiet=True))


def test_the_choice_blames_where_the_error_starts_not_a_misattributed_value() -> None:
    """A block (attention, then an MLP whose linear is logged with the residual add the converter attributes to it):
    the attention adds 5% error, the linear's logged value is another tensor (error ~1) while the block's output
    shows only the attention's error. The attention is kept (not its projection alone: it holds the products), not
    the linear, and never the block."""
    from mobileclip_deploy.verify.diagnose import Trace

    rng = np.random.default_rng(0)
    x, a, f = (rng.standard_normal((4, 16)).astype(np.float32) for _ in range(3))
    noise = 0.05 * np.linalg.norm(a) * rng.standard_normal(a.shape).astype(np.float32) / np.sqrt(a.size)
    trace = Trace(order=["blk.attn.out_proj", "blk.attn", "blk.mlp.fc", "blk.mlp", "blk"],
                  inputs={"blk.attn.out_proj": x, "blk.attn": x, "blk.mlp.fc": a, "blk.mlp": a, "blk": x},
                  outputs={"blk.attn.out_proj": a, "blk.attn": a, "blk.mlp.fc": f, "blk.mlp": f, "blk": a + f})
    records = [("blk.attn.out_proj", "op 1", a + noise, None), ("blk.attn", "op 1", a + noise, None),
               ("blk.mlp.fc", "op 2", f + a + noise, None), ("blk", "op 2", a + f + noise, None)]
    added = coreai_fp16.added_error(trace, records)
    assert "blk" not in added and added["blk.attn"] > 0.04 and added["blk.mlp.fc"] < 0.01
    assert coreai_fp16.worst(added, [], coreai_fp16.PER_ROUND) == ["blk.attn"]
    assert coreai_fp16.worst(added, ["blk.attn"], coreai_fp16.PER_ROUND) == []

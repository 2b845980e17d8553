"""The parity gate fails what it must: planted defects in ONNX Runtime and ExecuTorch XNNPACK artifacts of a tiny
S0-like model on synthetic weights; clean artifacts pass; near-constant references are "not assessable"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import TINY, synthetic_tiny_model
from planted import (
    coarsen_one_layer,
    onnx_coarsen_initializer,
    onnx_perturb_initializer,
    onnx_swap_gelu,
    perturb_one_layer,
    swap_one_activation,
)
from rich.console import Console

from mobileclip_deploy import reparameterize, runtimes
from mobileclip_deploy.exporters import pipeline
from mobileclip_deploy.exporters.backends import all_backends
from mobileclip_deploy.exporters.context import judge as context_judge
from mobileclip_deploy.exporters.schemes import parse_thresholds
from mobileclip_deploy.exporters.wrappers import example_input
from mobileclip_deploy.models.clip import CLIP
from mobileclip_deploy.verify.gate import SPREAD_FLOOR, assess, spread

pytestmark = pytest.mark.usefixtures("one_thread")


tiny_model = synthetic_tiny_model


@pytest.fixture(scope="module")
def ctx(module_tmp):
    request = pipeline.ExportRequest(pairs=[], output_dir=module_tmp("gate"))
    return pipeline.context(reparameterize(tiny_model()).eval(), TINY, request)


def judge(ctx, tower: str, scheme: str, out: np.ndarray) -> dict:
    s = all_backends()["onnx"].scheme(scheme) if scheme in ("fp32", "8da8w") else all_backends()["executorch-xnnpack"].scheme(scheme)
    return context_judge(ctx, tower, s, "test", out, parse_thresholds(None)[s.threshold_class])


# The gate's rules on plain arrays ------------------------------------------------------------------------------------

def test_near_constant_reference_is_not_assessable_and_scrambled_differences_fail() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal(64)
    ref = base + 1e-3 * rng.standard_normal((8, 64))  # default-init weights: every input embeds to ~one vector
    result = assess(ref, ref + 1e-5 * rng.standard_normal(ref.shape), "8bit", partner=rng.standard_normal((8, 64)))
    assert result["spread"] < SPREAD_FLOOR
    assert result["passed"] is None and result["decisive"] == "spread" and "not assessable" in result["message"]
    # Inputs embed apart (spread ~0.1, pairwise cosine ~0.99): an artifact that keeps the common direction but
    # scrambles half of the differences between inputs passes a cosine gate and fails the centered cosine.
    ref = 10 * base + rng.standard_normal((8, 64))
    bad = assess(ref, ref + 0.5 * rng.standard_normal(ref.shape), "8bit", partner=rng.standard_normal((8, 64)))
    assert bad["spread"] > SPREAD_FLOOR and bad["min_cosine"] > 0.99  # the 8-bit cosine limit alone would pass it
    assert bad["passed"] is False and bad["decisive"] == "centered_cosine"
    assert bad["message"].startswith("centered_cosine") and "below the 8bit limit" in bad["message"]


def test_limits_are_configurable_per_class_and_metric() -> None:
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((8, 64))
    out = ref + 0.05 * rng.standard_normal(ref.shape)
    strict = assess(ref, out, "8bit", overrides={"8bit.centered_cosine": 0.9999})
    loose = assess(ref, out, "8bit", overrides={"8bit.centered_cosine": 0.9})
    assert strict["passed"] is False and strict["decisive"] == "centered_cosine"
    assert loose["passed"] is True and loose["limits"]["centered_cosine"] == 0.9


def test_a_check_on_some_inputs_judges_those_rows_of_the_full_check() -> None:
    """Core AI's fp16 checks run 2 of the 8 parity inputs: centred on all eight references, they measure exactly
    those rows of the 8-input check; centred on their own mean they would judge a half-difference instead."""
    rng = np.random.default_rng(2)
    ref = 5 * rng.standard_normal(64) + rng.standard_normal((8, 64))
    ref[1] = ref[0] + 0.3 * rng.standard_normal(64)  # two near-alike photos first, as S2's first two are
    out = ref + 0.01 * rng.standard_normal(ref.shape)
    unit = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    unit_out = out / np.linalg.norm(out, axis=1, keepdims=True)
    centred = [float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))
               for a, b in zip(unit - unit.mean(0), unit_out - unit.mean(0), strict=True)]
    part = assess(ref[:2], out[:2], "fp16", population=ref)
    assert part["centered_cosine"] == pytest.approx(min(centred[:2]), abs=1e-12)
    assert part["spread"] == round(spread(ref), 6)
    alone = assess(ref[:2], out[:2], "fp16")  # the half-difference of two alike inputs: far harsher
    assert alone["centered_cosine"] < part["centered_cosine"] - 1e-3
    assert assess(ref, out, "fp16", population=ref)["centered_cosine"] == assess(ref, out, "fp16")["centered_cosine"]
    with pytest.raises(ValueError, match="population"):
        assess(ref[:2], out[:2], "fp16", population=ref[1:])


def test_synthetic_weights_embed_inputs_apart_where_default_init_does_not(ctx) -> None:
    plain = pipeline.context(reparameterize(CLIP(TINY).eval()).eval(), TINY, ctx.request)
    for tower in ("image", "text"):
        assert spread(ctx.reference(tower)) > 4 * SPREAD_FLOOR, tower
    assert spread(plain.reference("image")) < SPREAD_FLOOR  # the case the gate reports as not assessable


# ONNX Runtime: edit the exported graph ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_files(ctx, module_tmp) -> dict[str, Path]:
    from mobileclip_deploy.exporters import onnx as onnx_exp

    work = module_tmp("onnx")
    files = {}
    for scheme in ("fp32", "8da8w"):
        files[scheme] = work / f"image_{scheme}.onnx"
        onnx_exp.export(ctx.export_towers["image"], example_input("image", TINY.image_size, TINY.context_length),
                        "image", scheme, files[scheme], None, work)
    files["gelu->relu"] = onnx_swap_gelu(files["fp32"], work / "relu.onnx")
    files["perturbed"] = onnx_perturb_initializer(files["fp32"], work / "perturbed.onnx")
    files["2-bit layer"] = onnx_coarsen_initializer(files["fp32"], work / "coarse.onnx")
    return files


def _onnx(ctx, path: Path) -> np.ndarray:

    return runtimes.load(path).batched(ctx.inputs("image"))


@pytest.mark.parametrize("scheme", ["fp32", "8da8w"])
def test_clean_onnx_artifact_passes(ctx, onnx_files, scheme: str) -> None:
    result = judge(ctx, "image", scheme, _onnx(ctx, onnx_files[scheme]))
    assert result["passed"] is True, result["message"]


@pytest.mark.parametrize("defect,scheme", [("gelu->relu", "fp32"), ("perturbed", "fp32"), ("2-bit layer", "8da8w")])
def test_planted_onnx_defect_fails_the_gate(ctx, onnx_files, defect: str, scheme: str) -> None:
    """The 2-bit layer is judged as an 8-bit artifact would be: one layer far too coarse for its class."""
    result = judge(ctx, "image", scheme, _onnx(ctx, onnx_files[defect]))
    print(defect, result["message"])
    assert result["passed"] is False
    assert result["message"].startswith(result["decisive"]) and "below the" in result["message"]


# ExecuTorch XNNPACK: plant in the PyTorch tower before export -----------------------------------------------------

PLANTED = {"clean": lambda m: m, "gelu->relu": swap_one_activation, "perturbed": perturb_one_layer,
           "2-bit layer": coarsen_one_layer}


@pytest.mark.parametrize("defect,scheme", [("clean", "fp32"), ("clean", "8da8w"), ("gelu->relu", "fp32"),
                                           ("perturbed", "fp32"), ("2-bit layer", "8da8w")])
def test_executorch_gate(ctx, tmp_path: Path, defect: str, scheme: str) -> None:
    from mobileclip_deploy.exporters import executorch as et_exp

    # One layer of the image tower's middle sits in a LayerScale'd branch: at 2 bits it costs less than 8-bit
    # quantization of the whole tower (S0: centered cosine 0.998 vs 0.994), so the text tower carries that case.
    tower = "text" if defect == "2-bit layer" else "image"
    module = PLANTED[defect](ctx.export_towers[tower])
    path = tmp_path / "tower.pte"
    et_exp.export(module, example_input(tower, TINY.image_size, TINY.context_length), scheme, "xnnpack", path, None)
    result = judge(ctx, tower, scheme, runtimes.load(path).batched(ctx.inputs(tower)))
    print(defect, scheme, result["message"])
    assert result["passed"] is (defect == "clean"), result["message"]
    if defect != "clean":
        assert result["message"].startswith(result["decisive"])


def test_parity_failure_names_the_metric(ctx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: the export run refuses a planted artifact with the gate's message and writes nothing."""
    from mobileclip_deploy.exporters import onnx as onnx_exp

    real = onnx_exp.export

    def export_then_plant(module, example, tower, scheme, path, *args, **kwargs):
        facts = real(module, example, tower, scheme, path, *args, **kwargs)
        onnx_swap_gelu(path, path)
        return facts

    monkeypatch.setattr(onnx_exp, "export", export_then_plant)
    out = tmp_path / "out"
    request = pipeline.ExportRequest(pairs=[(all_backends()["onnx"], all_backends()["onnx"].scheme("fp32"))], output_dir=out,
                                     towers=("image",))
    [result] = pipeline.run(request, tiny_model(), TINY, None, Console(quiet=True))
    assert result.status == "failed" and "parity failed" in result.message
    assert "below the fp32 limit" in result.message
    assert not list(out.glob("*.onnx"))

"""Planted defects fail the gate in the backends whose runtimes here are not ONNX Runtime or ExecuTorch XNNPACK
(test_gate.py covers those two): the Core ML program executed op by op (`.mlpackage`, and the Core ML payload of an
`executorch-coreml` `.pte`), Core AI's reference runtime and LiteRT. Each defect is planted in the PyTorch tower,
which the backend then exports and runs as usual; the verdict is the pipeline's (`context.judge`) against the clean
model, and its message starts with the metric that failed. The clean artifact passes."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TINY, synthetic_tiny_model
from planted import coarsen_one_layer, perturb_one_layer, swap_one_activation

from mobileclip_deploy import reparameterize
from mobileclip_deploy.exporters import manifest as mf
from mobileclip_deploy.exporters import pipeline
from mobileclip_deploy.exporters.backends import Build, all_backends
from mobileclip_deploy.exporters.context import judge
from mobileclip_deploy.exporters.schemes import parse_thresholds
from mobileclip_deploy.exporters.wrappers import example_input

pytestmark = pytest.mark.usefixtures("one_thread")

# The scheme a 2-bit layer is judged at: the backend's 8-bit one (fp16 where it has none), so the defect is one
# layer far too coarse for its class. It goes in the text tower: the tiny image tower's middle layer sits in a
# LayerScale'd branch, where 2 bits cost less than 8-bit quantization of the whole tower (see test_gate.py).
COARSE = {"coreml": "w8", "executorch-coreml": "fp16", "coreai": "w8", "litert": "8da8w"}
CASES = [("clean", "image", "fp32"), ("gelu->relu", "image", "fp32"), ("perturbed", "image", "fp32"),
         ("2-bit layer", "text", None)]
PLANT = {"clean": lambda m: m, "gelu->relu": swap_one_activation, "perturbed": perturb_one_layer,
         "2-bit layer": coarsen_one_layer}


@pytest.fixture(scope="module")
def ctx(module_tmp):
    # parity=False: Core ML's export then writes the program as asked (no fp16 repair), which this test judges
    request = pipeline.ExportRequest(pairs=[], output_dir=module_tmp("planted"), parity=False)
    return pipeline.context(reparameterize(synthetic_tiny_model()).eval(), TINY, request)


@pytest.mark.parametrize(("defect", "tower", "scheme"), CASES)
@pytest.mark.parametrize("backend", list(COARSE))
def test_planted_defect_fails_the_gate_and_the_clean_artifact_passes(ctx, tmp_path: Path, backend: str,
                                                                      defect: str, tower: str, scheme: str | None):
    chosen = all_backends()[backend]
    scheme = chosen.scheme(scheme or COARSE[backend])
    options, _ = chosen.resolve(scheme, {})
    path = tmp_path / f"tower{chosen.suffix}"
    build = Build(tower=tower, scheme=scheme, module=PLANT[defect](ctx.export_towers[tower]),
                  example=example_input(tower, TINY.image_size, TINY.context_length), variant=TINY, path=path,
                  work_dir=tmp_path, calibration=None, keep=None, options=options,
                  metadata={"variant": TINY.name, "tower": tower, "scheme": scheme.name, "embed_dim": TINY.embed_dim,
                            "preprocessing": mf.preprocessing(TINY), "tokenizer": None},
                  inputs=ctx.inputs(tower), context=ctx)
    _, handle = chosen.export(build)
    check, out, extra = chosen.check(build, path, handle)
    result = judge(ctx, tower, scheme, check, out, parse_thresholds(None)[scheme.threshold_class], extra)
    assert result["passed"] is (defect == "clean"), result["message"]
    if defect != "clean":
        assert result["message"].startswith(result["decisive"]) and "below the" in result["message"]

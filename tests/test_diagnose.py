"""`diagnose` names the layer where an artifact departs from PyTorch: one GELU swapped for a ReLU in one block of the
tiny S0-shaped image tower (golden weights) before export, Core ML, ONNX, LiteRT, Core AI and ExecuTorch's Core ML
delegate (each through its backend's `diagnose`); the clean artifact has no divergence. ExecuTorch XNNPACK is diagnosed
on a twin lowered again, so its ReLU is planted in the lowering. A failed gate in `export` names the layer by itself."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, tiny_model

from mobileclip_deploy import reparameterize
from mobileclip_deploy.exporters.backends import get_backend
from mobileclip_deploy.exporters.fold import fold_affine
from mobileclip_deploy.exporters.schemes import FP32
from mobileclip_deploy.exporters.wrappers import example_input, tower_module
from mobileclip_deploy.verify.diagnose import diagnose

pytestmark = pytest.mark.usefixtures("one_thread")
META = {"description": "test", "license": "test", "author": "test", "version": "0"}
PLANTED = "model.visual.trunk.stages.1.blocks.0.mlp.act"
TWIN_PLANTED = "blocks.2.mlp.act"  # in helpers' TinyTower


@pytest.fixture(scope="module")
def towers():
    """(clean affine-folded image tower, the same with PLANTED a ReLU, one input)."""
    tower = fold_affine(tower_module(reparameterize(tiny_model()).eval(), "image", TINY.image_size,
                                     TINY.context_length))
    assert isinstance(tower.get_submodule(PLANTED), torch.nn.GELU)
    planted = _plant_relu(tower)
    x = np.random.default_rng(0).random((1, 3, TINY.image_size, TINY.image_size), dtype=np.float32)
    with torch.no_grad():
        a, b = tower(torch.from_numpy(x)), planted(torch.from_numpy(x))
    assert torch.nn.functional.cosine_similarity(a, b).item() > 0.99  # a final cosine barely sees it
    return tower, planted, x


def _export(backend: str, module: torch.nn.Module, path: Path) -> Path:
    example = example_input("image", TINY.image_size, TINY.context_length)
    if backend == "coreml":
        from mobileclip_deploy.exporters import coreml as coreml_exp

        coreml_exp.export(module, example, "image", "fp32", path, "iOS17", False, dict(META))
    elif backend == "onnx":
        from mobileclip_deploy.exporters import onnx as onnx_exp

        onnx_exp.export(module, example, "image", "fp32", path, None, path.parent)
    elif backend == "litert":
        pytest.importorskip("litert_torch")
        from mobileclip_deploy.exporters.backends import litert

        litert.export(module, example, "image", "fp32", path, path.parent, dict(META))
    elif backend == "executorch-coreml":
        from mobileclip_deploy.exporters import executorch as et_exp

        et_exp.export(module, example, "fp32", "coreml", path, None, "iOS17")
    else:
        pytest.importorskip("coreai_torch")
        from mobileclip_deploy.exporters.backends import coreai

        coreai.export_asset(module, example, "image", "fp32", path, dict(META))
    return path


@pytest.mark.parametrize("backend,suffix", [("coreml", ".mlpackage"), ("onnx", ".onnx"), ("litert", ".tflite"),
                                            ("coreai", ".aimodel"), ("executorch-coreml", ".pte")])
def test_diagnose_names_the_swapped_activation(towers, backend, suffix, tmp_path):
    tower, planted, x = towers
    bad = _export(backend, planted, tmp_path / f"planted{suffix}")
    found = diagnose(get_backend(backend), bad, tower, x, FP32)
    assert found["backend"] == backend and found["module"] is not None, found
    assert PLANTED in found["module"].split(", "), found
    assert len(found["module"].split(", ")) <= 2, found  # the act, at most with one neighbour
    good = _export(backend, tower, tmp_path / f"clean{suffix}")
    clean = diagnose(get_backend(backend), good, tower, x, FP32)
    assert clean["module"] is None and clean["compared"] > 5, clean


def _plant_relu(tower: torch.nn.Module, path: str = PLANTED) -> torch.nn.Module:
    """A copy of `tower` with the GELU at `path` computing ReLU."""
    planted = copy.deepcopy(tower)
    parent, _, leaf = path.rpartition(".")
    setattr(planted.get_submodule(parent), leaf, torch.nn.ReLU())
    return planted


def test_xnnpack_diagnoses_on_a_faithful_twin(tmp_path, monkeypatch):
    """ExecuTorch XNNPACK, whose saved partition hides its values, is diagnosed on a twin lowered again by the
    exporter's code: the clean artifact shows no divergence; a lowering that computes TWIN_PLANTED as ReLU (planted in
    the depthwise rewrite the export and the twin share) is named; a twin that does not reproduce the file (the clean
    artifact diagnosed while the lowering plants the ReLU) names nothing and says why. On helpers' TinyTower (depthwise
    mixers, GELU MLPs): each lowering of the tiny S0 tower costs ~20 s of CI, and this test needs five."""
    from helpers import TinyTower

    from mobileclip_deploy.errors import UserError
    from mobileclip_deploy.exporters import executorch as et_exp

    tower = TinyTower(outliers=False).eval()
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    example = torch.from_numpy(x)
    backend = get_backend("executorch-xnnpack")
    et_exp.export(tower, example, "fp32", "xnnpack", tmp_path / "clean.pte", None)
    clean = diagnose(backend, tmp_path / "clean.pte", tower, x, FP32)
    assert clean["module"] is None and clean["compared"] > 5 and "twin" in clean["note"], clean
    split = et_exp.split_depthwise
    monkeypatch.setattr(et_exp, "split_depthwise", lambda module: _plant_relu(split(module), TWIN_PLANTED))
    with pytest.raises(UserError, match="does not reproduce the artifact"):
        diagnose(backend, tmp_path / "clean.pte", tower, x, FP32)
    et_exp.export(tower, example, "fp32", "xnnpack", tmp_path / "planted.pte", None)
    found = diagnose(backend, tmp_path / "planted.pte", tower, x, FP32)
    assert found["module"] == TWIN_PLANTED and found["where"] == "inside", found


def test_cli_names_the_layer_in_an_export(tmp_path, monkeypatch):
    """`mobileclip-deploy diagnose EXPORT_DIR ARTIFACT` on a Core ML and an ONNX artifact exported (through the
    pipeline) from a model with the planted ReLU, against the clean model: exit 1 and the layer's path."""
    from rich.console import Console
    from typer.testing import CliRunner

    from mobileclip_deploy.cli import app
    from mobileclip_deploy.exporters import pipeline
    from mobileclip_deploy.exporters.backends import resolve_pairs

    planted = tiny_model()
    parent, _, leaf = PLANTED.removeprefix("model.").rpartition(".")
    setattr(planted.get_submodule(parent), leaf, torch.nn.ReLU())
    request = pipeline.ExportRequest(pairs=resolve_pairs([], ["coreml:fp32", "onnx:fp32"]), output_dir=tmp_path,
                                     towers=("image",))
    results = pipeline.run(request, planted, TINY, "0" * 64, Console(quiet=True))
    assert [r.status for r in results] == ["ok", "ok"], [r.message for r in results]
    monkeypatch.setattr("mobileclip_deploy.cli.verify.reference_model",
                        lambda *a, **k: (TINY, reparameterize(tiny_model()).eval()))
    for result in results:
        out = CliRunner().invoke(app, ["diagnose", str(tmp_path), result.file])
        assert out.exit_code == 1 and PLANTED in out.stdout, out.stdout
    missing = CliRunner().invoke(app, ["diagnose", str(tmp_path), "nope.onnx"])
    assert missing.exit_code == 2 and "not an artifact" in missing.stderr


@pytest.mark.parametrize("backend,where,step,needs", [
    ("litert", "backends.litert", "split_depthwise", "litert_torch"),
    ("coreai", "backends.coreai", "compress", "coreai_torch"),
])
def test_a_failed_gate_names_the_layer(tmp_path, monkeypatch, backend, where, step, needs):
    """`export -q BACKEND:fp32` whose conversion computes one GELU as a ReLU (planted in the module that `step` of
    exporters.`where` hands to the converter): the gate fails, its message names the planted module (the automatic
    diagnosis, against the clean tower), and nothing is written. (XNNPACK's, on a twin, is named in
    test_xnnpack_diagnoses_on_a_faithful_twin; through the pipeline it took ~40 s more of CI.)"""
    import importlib

    from helpers import export

    pytest.importorskip(needs)
    module = importlib.import_module(f"mobileclip_deploy.exporters.{where}")
    original = getattr(module, step)

    def planted(tower: torch.nn.Module, *args, **kwargs) -> torch.nn.Module:
        return _plant_relu(original(tower, *args, **kwargs))  # a copy: the pipeline's tower stays clean

    monkeypatch.setattr(module, step, planted)
    (result,) = export(tmp_path, [f"{backend}:fp32"], towers=("image",))
    assert result.status == "failed" and "parity failed" in result.message, result.message
    assert "first divergence at " in result.message and PLANTED in result.message, result.message
    assert not (tmp_path / result.file).exists()


def test_cli_refuses_an_artifact_its_backend_cannot_look_into(tmp_path, monkeypatch):
    """A backend without `diagnose` (the test-only one): one line naming the backends that can, exit code 2."""
    from helpers import export, refusal, registered

    with registered() as backend:
        (result,) = export(tmp_path, [f"{backend.name}:fp32"], towers=("image",))
        monkeypatch.setattr("mobileclip_deploy.cli.verify.reference_model",
                            lambda *a, **k: (TINY, reparameterize(tiny_model()).eval()))
        message = refusal("diagnose", tmp_path, result.file)
    assert message == (f"{result.file}: diagnose compares coreai, coreml, executorch-coreml, executorch-xnnpack, "
                       "litert, onnx artifacts; "
                       "test-recording artifacts cannot be looked into op by op yet")

"""Every refused export request and bad input ends in one clear message, before any work and with nothing written."""

from __future__ import annotations

from pathlib import Path

import helpers
import pytest
from rich.console import Console

from mobileclip_deploy import create_model
from mobileclip_deploy.exporters import pipeline
from mobileclip_deploy.exporters.recipe import load_recipe
from mobileclip_deploy.exporters.backends import resolve_pairs
from mobileclip_deploy.registry import get_variant

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "export").glob("*.toml"))


def refusal(*args: str | Path) -> str:
    """`mobileclip-deploy export ...`'s refusal (one line, unwrapped)."""
    return helpers.refusal("export", *args)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


def test_unknown_format_lists_formats(out: Path) -> None:
    message = refusal("--random-weights", "-f", "tflite", "-q", "fp32", "-o", out)
    assert "unknown format 'tflite'" in message
    assert "coreml" in message and "onnx" in message and "executorch-xnnpack" in message
    assert not out.exists()


def test_unsupported_scheme_lists_supported(out: Path) -> None:
    message = refusal("--random-weights", "-f", "coreml", "-q", "8da4w", "-o", out)
    assert "coreml does not support the quantization scheme '8da4w'" in message
    assert "coreml supports: fp32, fp16, w8, pal8, pal6, pal4" in message
    message = refusal("--random-weights", "-f", "onnx", "-f", "coreml", "-q", "8da8w", "-o", out)
    assert "coreml does not support" in message and not out.exists()


def test_typo_gets_did_you_mean(out: Path) -> None:
    assert "did you mean 'onnx'" in refusal("--random-weights", "-f", "onxx", "-q", "fp32", "-o", out)
    assert "did you mean 'pal8'" in refusal("--random-weights", "-f", "coreml", "-q", "pal9", "-o", out)


def test_no_scheme_lists_supported(out: Path) -> None:
    message = refusal("--random-weights", "-f", "executorch", "-o", out)
    assert "no --quant given" in message and "executorch-xnnpack: fp32, w8a8, 8da8w, 8da4w, auto" in message


def test_static_scheme_needs_calibration(out: Path) -> None:
    message = refusal("--random-weights", "-f", "onnx", "-q", "w8a8", "-o", out)
    assert "onnx:w8a8 is static quantization" in message and "--calibration DIR" in message
    assert not out.exists()


def test_calibration_folder_without_images(tmp_path: Path, out: Path) -> None:
    empty = tmp_path / "photos"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photos here")
    message = refusal("--random-weights", "-f", "executorch", "-q", "w8a8", "--calibration", empty, "-o", out)
    assert f"calibration folder {empty} holds no images" in message
    assert "calibration folder not found" in refusal(
        "--random-weights", "-f", "onnx", "-q", "w8a8", "--calibration", tmp_path / "missing", "-o", out)


def test_missing_checkpoint(tmp_path: Path, out: Path) -> None:
    message = refusal("--checkpoint", tmp_path / "nope.pt", "-f", "onnx", "-q", "fp32", "-o", out)
    assert "nope.pt does not exist" in message
    assert not (out / "manifest.json").exists()


def test_weights_required(out: Path) -> None:
    message = refusal("-f", "onnx", "-q", "fp32", "-o", out)
    assert "--checkpoint" in message and "--random-weights" in message


def test_unwritable_output_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    message = refusal("--random-weights", "-f", "onnx", "-q", "fp32", "-o", blocker / "out")
    assert f"cannot write to output folder {blocker / 'out'}" in message


def test_deployment_target_too_low_for_scheme(out: Path) -> None:
    message = refusal("--random-weights", "-f", "coreml", "-q", "pal4", "--deployment-target", "iOS17", "-o", out)
    assert "coreml pal4 needs deployment target iOS18" in message
    request = pipeline.ExportRequest(pairs=resolve_pairs(["coreml"], ["pal4"]), output_dir=out)
    jobs, notices = pipeline.plan(request)
    assert {j.options["deployment_target"] for j in jobs} == {"iOS18"} and "raised to iOS18" in notices[0]


def test_option_misuse(out: Path) -> None:
    assert "--tower must be image, text or both" in refusal(
        "--random-weights", "-f", "onnx", "-q", "fp32", "--tower", "audio", "-o", out)
    assert "expected CLASS=COSINE" in refusal(
        "--random-weights", "-f", "onnx", "-q", "fp32", "--threshold", "fp16", "-o", out)
    assert "unknown threshold class 'fp8'" in refusal(
        "--random-weights", "-f", "onnx", "-q", "fp32", "--threshold", "fp8=0.9", "-o", out)
    assert "--ort converts ONNX artifacts" in refusal("--random-weights", "-f", "coreml", "-q", "fp16", "--ort",
                                                      "-o", out)
    assert "--image-input applies to Core ML image encoders" in refusal(
        "--random-weights", "-f", "onnx", "-q", "fp32", "--image-input", "-o", out)


def test_bad_recipes(tmp_path: Path, out: Path) -> None:
    cases = {
        "broken.toml": ("formats = [", "is not valid TOML"),
        "unknown.toml": ('colour = "red"\n[formats.onnx]\nschemes = ["fp32"]\n', "unknown keys ['colour']"),
        "empty.toml": ('description = "nothing"\n', "needs a [formats.<name>] table"),
        "scheme.toml": ('[formats.onnx]\nschemes = ["pal4"]\n', "onnx does not support the quantization scheme 'pal4'"),
        "format.toml": ('[formats.tflite]\nschemes = ["fp32"]\n', "unknown format 'tflite'"),
        "tower.toml": ('tower = "audio"\n[formats.onnx]\nschemes = ["fp32"]\n', "tower must be image, text or both"),
        "types.toml": ('[formats.onnx]\nschemes = ["fp32"]\nort = "yes"\n', "`ort` must be a bool, not 'yes'"),
        "limit.toml": ('calibration_limit = 0\n[formats.onnx]\nschemes = ["fp32"]\n', "calibration_limit must be at"),
    }
    for name, (text, expected) in cases.items():
        recipe = tmp_path / name
        recipe.write_text(text)
        assert expected in refusal("--random-weights", "--recipe", recipe, "-o", out), name
    assert "recipe not found" in refusal("--random-weights", "--recipe", tmp_path / "none.toml", "-o", out)


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_shipped_recipes_plan(recipe: Path, tmp_path: Path) -> None:
    spec = load_recipe(recipe)
    assert spec.quants, recipe
    request = pipeline.ExportRequest(pairs=resolve_pairs([], spec.quants), output_dir=tmp_path,
                                     format_options=spec.options)
    jobs, _ = pipeline.plan(request)
    assert {j.tower for j in jobs} == {"image", "text"}


def test_shipped_recipes_cover_the_three_targets() -> None:
    backends = {q.split(":")[0] for r in RECIPES for q in load_recipe(r).quants}
    assert {"coreml", "executorch-xnnpack", "onnx"} <= backends


def test_failed_parity_leaves_nothing_finished(out: Path) -> None:
    """An artifact below its threshold is neither in the folder nor in the manifest, and the run says why."""
    model = create_model("mobileclip-s0", synthetic_seed=0)  # inputs embed apart, so parity is assessable
    request = pipeline.ExportRequest(pairs=resolve_pairs(["onnx"], ["8da8w"]), output_dir=out, towers=("text",),
                                     thresholds={"8bit": 1.0})
    [result] = pipeline.run(request, model, get_variant("mobileclip-s0"), None, Console(quiet=True))
    assert result.status == "failed" and "parity failed" in result.message and "nothing was written" in result.message
    assert not (out / result.file).exists()
    assert not out.exists()  # the run made the folder, finished nothing, and took it back


def test_a_recipe_sets_an_option_whose_default_is_none(tmp_path: Path, out: Path) -> None:
    """`[formats.coreai] parity_inputs = N` (documented in the README) is read as the int it is, reaches the plan,
    and a wrong type or a count below 1 is refused."""
    recipe = tmp_path / "coreai.toml"
    recipe.write_text('[formats.coreai]\nschemes = ["fp32"]\nparity_inputs = 4\n')
    spec = load_recipe(recipe)
    assert spec.options == {"coreai": {"parity_inputs": 4}}
    request = pipeline.ExportRequest(pairs=resolve_pairs([], spec.quants), output_dir=out, format_options=spec.options)
    jobs, _ = pipeline.plan(request)
    assert {j.options["parity_inputs"] for j in jobs} == {4}
    for value, expected in (('"4"', "`parity_inputs` must be an int, not '4'"),
                            ("0", "parity_inputs must be at least 1, not 0")):
        recipe.write_text(f'[formats.coreai]\nschemes = ["fp32"]\nparity_inputs = {value}\n')
        assert expected in refusal("--random-weights", "--recipe", recipe, "-o", out), value

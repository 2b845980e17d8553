"""fp16 that works: S0's image tower with LayerScales drawn from U(1.5, 3) (golden weights otherwise) overflows fp16
in its Core ML program; executing the program names the overflowing op, and the export keeps the offending ops in
fp32 until the program passes. (The tiny S0-shaped model does not overflow with these weights: S0 it is.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("coremltools")

from mobileclip_deploy.exporters import coreml as coreml_exp  # noqa: E402
from mobileclip_deploy.exporters.parity import compare  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
META = {"description": "test", "license": "test", "author": "test", "version": "0"}


@pytest.fixture(scope="module")
def hot_s0(shared_dir: Path, module_tmp):
    """The folded, affine-folded S0 image tower with large LayerScales, its example and 2 golden images."""
    from goldens import make_golden_state_dict, manifest_path

    from mobileclip_deploy import create_model, reparameterize
    from mobileclip_deploy.exporters.fold import fold_affine
    from mobileclip_deploy.exporters.wrappers import example_input, tower_module
    from mobileclip_deploy.registry import get_variant

    state = make_golden_state_dict(manifest_path(shared_dir, "mobileclip_s0"))
    rng = np.random.default_rng(3)
    for key, value in state.items():
        if "layer_scale" in key.rsplit(".", 1)[-1] or key.endswith(".gamma"):
            state[key] = torch.from_numpy(rng.uniform(1.5, 3.0, tuple(value.shape)).astype(np.float32))
    checkpoint = module_tmp("hot") / "s0.pt"
    torch.save(state, checkpoint)
    variant = get_variant("mobileclip-s0")
    tower = tower_module(reparameterize(create_model("mobileclip-s0", checkpoint=checkpoint)).eval(), "image",
                         variant.image_size, variant.context_length)
    images = np.load(shared_dir / "reference" / "goldens" / "mobileclip_s0.npz")["image"][:2]
    with torch.no_grad():
        reference = tower(torch.from_numpy(images)).numpy()
    return fold_affine(tower), example_input("image", variant.image_size, variant.context_length), images, reference


def test_overflow_is_named_then_repaired(hot_s0, tmp_path):
    module, example, images, reference = hot_s0

    plain = tmp_path / "plain.mlpackage"
    coreml_exp.export(module, example, "image", "fp16", plain, "iOS17", False, dict(META))
    out, facts = coreml_exp.program_outputs(plain, "image", images)
    first = facts["fp16"]["fp16-storage"]["first_overflow"]
    assert first is not None and first["overflow"] > 0 and first["max_abs"] > 65504
    assert compare(reference, out)["min_cosine"] < 0.999  # the program is broken, and the check sees it
    assert "fp16 overflow first at op " + first["op"] in coreml_exp.overflow_text(facts)

    def gate(outputs: np.ndarray) -> tuple[bool, float]:
        cosine = compare(reference, outputs)["min_cosine"]
        return cosine >= 0.999, cosine

    fixed = tmp_path / "fixed.mlpackage"
    try:
        details = coreml_exp.export(module, example, "image", "fp16", fixed, "iOS17", False, dict(META),
                                    inputs=images, gate=gate)
    except coreml_exp.Fp16Overflow as refusal:  # the other allowed end: a message naming the ops and why
        assert "export fp32 instead (kept: " in str(refusal) and "precision, not range" in str(refusal)
        return
    assert details["kept_fp32_ops"] and details["fp16_overflow_repaired"][0]["op"] == first["op"]
    out, facts = coreml_exp.program_outputs(fixed, "image", images)
    assert facts["fp16"]["fp16-storage"]["first_overflow"] is None
    assert compare(reference, out)["min_cosine"] >= 0.999


def _fp32_ops(package: Path) -> set[str]:
    from coremltools.converters.mil.mil import types

    from mobileclip_deploy.runtimes.coreml_program import Program

    return {coreml_exp._base(op.name) for op in Program.load(package).ops
            if op.op_type not in ("const", "cast") and op.outputs and op.outputs[0].dtype == types.fp32}


def test_the_kept_ops_travel_in_a_recipe_and_rebuild_the_program(tmp_path):
    """A repair's choice is written as a recipe like an `auto` plan's; a rebuild from it computes those ops in fp32
    from the start, and a list naming ops the program does not have is refused (it would keep nothing)."""
    from helpers import entries, export

    from mobileclip_deploy.errors import UserError
    from mobileclip_deploy.exporters.recipe import load_recipe
    from mobileclip_deploy.runtimes.coreml_program import Program

    (plain,) = export(tmp_path / "plain", ["coreml:fp16"], towers=("image",))
    ops = Program.load(tmp_path / "plain" / plain.file).ops
    chosen = sorted(coreml_exp._base(op.name) for op in ops if op.op_type == "conv")[:2]
    assert len(chosen) == 2 and not (set(chosen) & _fp32_ops(tmp_path / "plain" / plain.file))
    written = tmp_path / "repair.recipe.toml"
    written.write_text(coreml_exp.repair_recipe_text("tiny-s0", "image", "fp16", "iOS17", {
        "kept_fp32_ops": chosen, "fp16_overflow_repaired": [{"op": chosen[0], "type": "conv", "max_abs": 7e4}]}))
    recipe = load_recipe(written)
    assert recipe.quants == ["coreml:fp16"]
    assert recipe.options == {"coreml": {"deployment_target": "iOS17", "keep_fp32": {"image": chosen}}}

    (rebuilt,) = export(tmp_path / "rebuilt", recipe.quants, towers=("image",), format_options=recipe.options)
    assert rebuilt.status == "ok" and rebuilt.parity["passed"], rebuilt.message
    assert set(chosen) <= _fp32_ops(tmp_path / "rebuilt" / rebuilt.file)
    entry = entries(tmp_path / "rebuilt")[rebuilt.file]
    assert entry["details"]["kept_fp32_ops"] == chosen
    assert load_recipe(tmp_path / "rebuilt" / entry["details"]["recipe"]).options == recipe.options  # it writes one too

    with pytest.raises(UserError, match="keep_fp32 names ops this program does not have: conv_typo"):
        export(tmp_path / "typo", ["coreml:fp16"], towers=("image",),
               format_options={"coreml": {"keep_fp32": {"image": ["conv_typo"]}}})
    with pytest.raises(UserError, match="keep_fp32 applies to schemes that compute in fp16"):
        export(tmp_path / "fp32", ["coreml:fp32"], towers=("image",),
               format_options={"coreml": {"keep_fp32": {"image": chosen}}})

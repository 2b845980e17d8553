"""Weights that would give silently wrong scores are refused at load time; half precision loads and says so;
open_clip heads with a trained bias compute exactly what open_clip computes (the bias included)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from goldens import make_golden_state_dict, manifest_path, placeholder_state_dict

from mobileclip_deploy import create_model
from mobileclip_deploy.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

# A float parameter of S0's official layout (text side, so the message names the file's own key).
KEY = "text_encoder.final_layer_norm.weight"


@pytest.fixture(scope="module")
def s0_state(shared_dir: Path) -> dict[str, torch.Tensor]:
    return make_golden_state_dict(manifest_path(shared_dir, "mobileclip_s0"))


def _save(tmp_path: Path, state: dict[str, torch.Tensor], name: str = "s0.pt") -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


@pytest.mark.parametrize("bad", [float("nan"), float("-inf")])
def test_non_finite_weight_is_refused_naming_the_tensor(tmp_path: Path, s0_state: dict, bad: float) -> None:
    state = dict(s0_state)
    state[KEY] = state[KEY].clone()
    state[KEY][3] = bad
    with pytest.raises(UserError, match=rf"tensor {KEY} holds 1 non-finite value"):
        create_model("mobileclip-s0", _save(tmp_path, state))


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool])
def test_integer_weight_for_a_float_parameter_is_refused(tmp_path: Path, s0_state: dict, dtype: torch.dtype) -> None:
    state = dict(s0_state)
    state[KEY] = state[KEY].round().to(dtype)
    with pytest.raises(UserError, match=rf"tensor {KEY} is {str(dtype).removeprefix('torch.')}"):
        create_model("mobileclip-s0", _save(tmp_path, state))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_loads_upcast_and_reports_it(tmp_path: Path, s0_state: dict, dtype: torch.dtype) -> None:
    half = {k: v.to(dtype) if v.is_floating_point() else v for k, v in s0_state.items()}
    model = create_model("mobileclip-s0", _save(tmp_path, half))
    assert model.checkpoint_info.upcast_from == str(dtype).removeprefix("torch.")
    # Every float parameter holds exactly the half value, widened to float32.
    got = model.state_dict()
    for key, value in half.items():
        assert got[key].dtype == (torch.float32 if value.is_floating_point() else value.dtype)
        torch.testing.assert_close(got[key], value.to(got[key].dtype), rtol=0, atol=0)


def test_full_precision_reports_no_upcast(tmp_path: Path, s0_state: dict) -> None:
    assert create_model("mobileclip-s0", _save(tmp_path, s0_state)).checkpoint_info.upcast_from is None


@pytest.mark.parametrize("name, stem, head", [("mobileclip-s1", "openclip_MobileCLIP-S1", "visual.trunk.head.fc"),
                                              ("mobileclip-b", "openclip_MobileCLIP-B", "visual.trunk.head")])
def test_open_clip_head_bias_is_applied(tmp_path: Path, shared_dir: Path, name: str, stem: str, head: str) -> None:
    """open_clip's head is Linear(bias=True): the embedding is pooled @ W.T + b, with the file's W and b."""
    state = make_golden_state_dict(manifest_path(shared_dir, stem))
    bias = torch.linspace(-0.5, 0.5, state[f"{head}.weight"].shape[0])
    state[f"{head}.bias"] = bias
    model = create_model(name, _save(tmp_path, state, "open_clip_model.bin"))
    captured = {}
    model.get_submodule(head).register_forward_hook(lambda m, args, out: captured.update(x=args[0], y=out))
    size = model.variant.image_size
    with torch.no_grad():
        embedding = model.encode_image(torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)))
    expected = captured["x"] @ state[f"{head}.weight"].T + bias
    torch.testing.assert_close(embedding, expected, rtol=1e-5, atol=1e-5)
    assert (embedding - captured["x"] @ state[f"{head}.weight"].T).abs().max() > 0.4  # the bias is not dropped
    # The folded model (what every export starts from) keeps the bias.
    from mobileclip_deploy import reparameterize

    with torch.no_grad():
        torch.testing.assert_close(reparameterize(model).encode_image(torch.zeros(1, 3, size, size)),
                                   model.encode_image(torch.zeros(1, 3, size, size)), rtol=1e-4, atol=1e-4)


def test_zero_open_clip_head_bias_keeps_the_official_layout(tmp_path: Path, shared_dir: Path) -> None:
    state = placeholder_state_dict(manifest_path(shared_dir, "openclip_MobileCLIP-S1"))  # its head bias is zero
    model = create_model("mobileclip-s1", _save(tmp_path, state, "open_clip_model.bin"))
    assert model.visual.trunk.head.fc.bias is None

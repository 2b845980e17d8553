"""Checkpoint loading: every way a file can be wrong is one clear `UserError`; every real format loads exactly.

Error cases use placeholder state dicts (right keys and shapes, tiny files); positive cases write the golden
weights in each distributed format and check every tensor arrives unchanged.
"""

from __future__ import annotations

import json
import pickle
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from goldens import load_manifest, make_golden_state_dict, manifest_path, placeholder_state_dict
from safetensors.torch import save_file

from mobileclip_deploy import create_model
from mobileclip_deploy.checkpoint import inspect_checkpoint
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.layouts import canonical_state_dict
from mobileclip_deploy.reparam import is_folded

pytestmark = pytest.mark.usefixtures("one_thread")


def placeholder(shared_dir: Path, stem: str, form: str = "train_time") -> dict[str, torch.Tensor]:
    return placeholder_state_dict(manifest_path(shared_dir, stem), form)


def load_error(name: str, path: Path) -> str:
    with pytest.raises(UserError) as info:
        create_model(name, checkpoint=path)
    return str(info.value)


# ------------------------------------------------------------------------------------------------ bad input
NOISE = random.Random(0).randbytes(4096)  # seeded: some byte strings happen to parse as pickle opcodes

def test_unknown_model_name(tmp_path: Path) -> None:
    message = load_error("mobileclip-s9", tmp_path / "unused.pt")
    assert message.startswith("unknown model 'mobileclip-s9'. Did you mean mobileclip-s")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "mobileclip_s0.pt"
    assert load_error("mobileclip-s0", path) == f"checkpoint {path} does not exist."


@pytest.mark.parametrize(("filename", "write", "expected"), [
    ("notes.pt", lambda p: p.write_text("hello, this is not a checkpoint\n"), "is not a PyTorch checkpoint"),
    ("random.bin", lambda p: p.write_bytes(NOISE), "is not a PyTorch checkpoint"),
    ("random.safetensors", lambda p: p.write_bytes(NOISE), "is not a readable safetensors file"),
    ("empty.pt", lambda p: p.write_bytes(b""), "is empty, not a checkpoint"),
    ("list.pt", lambda p: torch.save([torch.zeros(2)], p), "does not hold a state dict of tensors (found list)"),
    ("resnet.pt", lambda p: torch.save({"fc.weight": torch.zeros(2, 2)}, p),
     "is not a MobileCLIP checkpoint: its keys (fc.weight, ...) are neither official"),
])
def test_not_a_checkpoint(tmp_path: Path, filename: str, write: Callable[[Path], object], expected: str) -> None:
    path = tmp_path / filename
    write(path)
    message = load_error("mobileclip-s0", path)
    assert message.startswith(str(path)) and expected in message


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_file(tmp_path: Path, suffix: str) -> None:
    whole, cut = tmp_path / f"whole{suffix}", tmp_path / f"cut{suffix}"
    state = {"image_encoder.model.head.proj": torch.randn(1024, 512)}
    save_file(state, whole) if suffix == ".safetensors" else torch.save(state, whole)
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in load_error("mobileclip-s0", cut)


class Payload:
    """Unpickling this runs code (it creates `marker`): what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("container", ["torch.save", "pickle"])
def test_pickle_with_objects_is_refused_without_running_code(tmp_path: Path, shared_dir: Path,
                                                             container: str) -> None:
    marker, path = tmp_path / "code_ran", tmp_path / "mobileclip_s0.pt"
    obj = {"state_dict": placeholder(shared_dir, "mobileclip_s0"), "hook": Payload(marker)}
    if container == "torch.save":
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"hook": Payload(marker)}, f, protocol=2)
    message = load_error("mobileclip-s0", path)
    assert "contains Python objects besides tensors; refusing to unpickle it" in message
    assert not marker.exists()


@pytest.mark.parametrize(("name", "stem", "form", "looks_like"), [
    ("mobileclip-s0", "mobileclip_s2", "train_time", "mobileclip-s2"),
    ("mobileclip-s0", "openclip_MobileCLIP2-S0", "train_time", "mobileclip2-s0"),
    ("mobileclip2-s0", "mobileclip_s0", "reparameterized", "mobileclip-s0"),
])
def test_keys_of_another_variant(tmp_path: Path, shared_dir: Path, name: str, stem: str, form: str,
                                 looks_like: str) -> None:
    path = tmp_path / "other.pt"
    torch.save(placeholder(shared_dir, stem, form), path)
    message = load_error(name, path)
    assert f"does not fit {name}: its keys look like a {looks_like} checkpoint (100% of keys" in message
    assert message.endswith(f"Use --model {looks_like}.")


def test_missing_and_unexpected_keys(tmp_path: Path, shared_dir: Path) -> None:
    """Keys are named as the file names them (official here), a few listed, the rest counted."""
    state = placeholder(shared_dir, "mobileclip_s0")
    removed = sorted(state)[100:105]
    for key in removed:
        del state[key]
    extra = [f"image_encoder.model.extra{i}.weight" for i in range(4)]
    state.update({k: torch.zeros(3) for k in extra})
    path = tmp_path / "edited.pt"
    torch.save(state, path)
    message = load_error("mobileclip-s0", path)
    assert "does not fit mobileclip-s0 (official layout, train-time)." in message
    assert f"Missing 5 keys: {', '.join(removed[:3])} and 2 more." in message
    assert f"Unexpected 4 keys: {', '.join(extra[:3])} and 1 more." in message


@pytest.mark.parametrize(("name", "stem", "key", "shape", "expected"), [
    ("mobileclip-s0", "mobileclip_s0", "image_encoder.model.head.proj", (1024, 256), (1024, 512)),
    ("mobileclip2-s0", "openclip_MobileCLIP2-S0", "visual.trunk.stem.0.conv_kxk.0.conv.weight", (64, 3, 5, 5),
     (64, 3, 3, 3)),
])
def test_shape_mismatch(tmp_path: Path, shared_dir: Path, name: str, stem: str, key: str, shape: tuple[int, ...],
                        expected: tuple[int, ...]) -> None:
    state = placeholder(shared_dir, stem)
    assert tuple(state[key].shape) == expected
    state[key] = torch.zeros(shape)
    path = tmp_path / "reshaped.pt"
    torch.save(state, path)
    assert load_error(name, path) == (f"{path} has 1 tensors of the wrong shape for {name}: "
                                      f"{key}: file {shape} vs model {expected}.")


def test_folder_without_or_with_several_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("model card")
    assert "holds no checkpoint file" in load_error("mobileclip-s0", tmp_path)
    for name in ("a.pt", "b.pt"):
        (tmp_path / name).write_bytes(b"x")
    assert "holds several checkpoint files (a.pt, b.pt); pass the one you mean." in load_error("mobileclip-s0",
                                                                                             tmp_path)


# ------------------------------------------------------------------------------------------------ good input
@pytest.fixture(scope="module")
def openclip_s0(shared_dir: Path) -> dict[str, torch.Tensor]:
    return make_golden_state_dict(manifest_path(shared_dir, "openclip_MobileCLIP2-S0"))


def write_bin(state: dict[str, torch.Tensor], folder: Path) -> Path:
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    return folder / "open_clip_pytorch_model.bin"


def write_training_pt(state: dict[str, torch.Tensor], folder: Path) -> Path:
    """open_clip's training checkpoints: DDP `module.` prefixes inside a dict with epoch and name."""
    torch.save({"epoch": 32, "name": "MobileCLIP2-S0", "state_dict": {f"module.{k}": v for k, v in state.items()}},
               folder / "epoch_32.pt")
    return folder / "epoch_32.pt"


def write_safetensors(state: dict[str, torch.Tensor], folder: Path) -> Path:
    save_file(state, folder / "model.safetensors")
    return folder / "model.safetensors"


def write_hf_folder(state: dict[str, torch.Tensor], folder: Path) -> Path:
    save_file(state, folder / "open_clip_model.safetensors")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 512}}))
    (folder / "README.md").write_text("MobileCLIP2-S0")
    return folder


@pytest.mark.parametrize("write", [write_bin, write_training_pt, write_safetensors, write_hf_folder])
def test_openclip_checkpoint_loads(tmp_path: Path, openclip_s0: dict[str, torch.Tensor],
                                   write: Callable[[dict[str, torch.Tensor], Path], Path]) -> None:
    model = create_model("MobileCLIP2-S0", checkpoint=write(openclip_s0, tmp_path))
    loaded = canonical_state_dict(model)
    assert sorted(loaded) == sorted(openclip_s0)
    assert [k for k, v in openclip_s0.items() if not torch.equal(loaded[k], v)] == []
    assert not is_folded(model)


@pytest.mark.parametrize(("name", "stem", "filename"), [
    ("mobileclip-s0", "mobileclip_s0", "mobileclip_s0_folded.pt"),
    ("mobileclip2-s0", "openclip_MobileCLIP2-S0", "folded.safetensors"),
])
def test_folded_checkpoint_loads(tmp_path: Path, shared_dir: Path, name: str, stem: str, filename: str) -> None:
    """A folded state dict (as `reparam` writes) folds the model first, then loads strictly, in its own layout."""
    state = make_golden_state_dict(manifest_path(shared_dir, stem), "reparameterized")
    path = tmp_path / filename
    save_file(state, path) if path.suffix == ".safetensors" else torch.save(state, path)
    model = create_model(name, checkpoint=path)
    assert is_folded(model)
    loaded = model.state_dict()
    assert sorted(loaded) == sorted(state)
    assert [k for k, v in state.items() if not torch.equal(loaded[k], v)] == []


@pytest.mark.parametrize(("stem", "form", "variant", "layout"), [
    ("mobileclip_s0", "train_time", "mobileclip-s0", "official"),
    ("mobileclip_s0", "reparameterized", "mobileclip-s0", "official"),
    ("mobileclip_b", "train_time", "mobileclip-b", "official"),
    ("openclip_MobileCLIP2-S0", "train_time", "mobileclip2-s0", "openclip"),
    ("openclip_MobileCLIP2-S4", "reparameterized", "mobileclip2-s4", "openclip"),
])
def test_inspect_checkpoint(tmp_path: Path, shared_dir: Path, stem: str, form: str, variant: str,
                            layout: str) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save(placeholder(shared_dir, stem, form), path)
    info = inspect_checkpoint(path)
    manifest = load_manifest(shared_dir, stem)[form]
    assert (info.layout, info.folded, info.variant, info.match) == (layout, form != "train_time", variant, 1.0)
    assert (info.num_tensors, info.num_params) == (manifest["num_entries"], manifest["params_total"])


@pytest.mark.parametrize(("stem", "fits"), [
    ("mobileclip_b", {"mobileclip-b", "mobileclip-b-lt"}),
    ("openclip_MobileCLIP-B", {"mobileclip-b", "mobileclip-b-lt", "mobileclip2-b"}),
    ("openclip_MobileCLIP2-S2", {"mobileclip-s2", "mobileclip2-s2"}),
    ("mobileclip_s0", {"mobileclip-s0"}),
])
def test_inspect_names_every_variant_the_weights_fit(tmp_path: Path, shared_dir: Path, stem: str,
                                                     fits: set[str]) -> None:
    """Variants that differ in no weight (B, B (LT) and MobileCLIP2-B; S2 and MobileCLIP2-S2) cannot be told
    apart from the file: inspect names them all."""
    path = tmp_path / "checkpoint.pt"
    torch.save(placeholder(shared_dir, stem, "train_time"), path)
    info = inspect_checkpoint(path)
    assert {info.variant, *info.also_fits} == fits
    assert info.variant not in info.also_fits

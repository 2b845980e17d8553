from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.preprocess import load_image, preprocess, preprocess_pil

GOLDEN_CASES = [
    f"{photo}@{size}"
    for size in (224, 256)
    for photo in (
        "n04461696_tow_truck", "n02640242_sturgeon", "n04141076_sax", "n04599235_wool",
        "n02802426_basketball", "n01685808_whiptail", "n02113624_toy_poodle", "n12267677_acorn",
    )
]


@pytest.fixture(scope="module")
def goldens(shared_dir):
    root = shared_dir / "reference" / "goldens"
    listed = json.loads((root / "preprocess_cases.json").read_text("utf-8"))["cases"]
    with np.load(root / "preprocess_cases.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert sorted(listed) == sorted(arrays) == sorted(GOLDEN_CASES)
    return arrays


def _to_uint8_hwc(x: torch.Tensor) -> np.ndarray:
    return (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_matches_reference_transform(case, goldens, shared_dir):
    photo, size = case.split("@")
    image = load_image(shared_dir / "data" / "imagenet-samples" / f"{photo}.JPEG")
    x = preprocess_pil(image, int(size))
    assert x.dtype == torch.float32 and x.shape == (3, int(size), int(size))
    assert 0.0 <= x.min() and x.max() <= 1.0
    diff = np.abs(_to_uint8_hwc(x).astype(np.int16) - goldens[case].astype(np.int16))
    assert diff.max() <= 1, f"{case}: max diff {diff.max()} grey levels"


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P"])
def test_non_rgb_modes_become_three_channels(mode):
    image = Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode)
    x = preprocess_pil(image, 24)
    assert x.shape == (3, 24, 24)


def test_resize_truncates_long_side_and_crops_center():
    # 30x10 image, left third black, middle white, right black; resize to 6 -> 18x6, crop keeps the middle.
    array = np.zeros((10, 30, 3), np.uint8)
    array[:, 10:20] = 255
    x = preprocess_pil(Image.fromarray(array), 6)
    assert x.shape == (3, 6, 6)
    assert torch.all(x[:, :, 1:5] > 0.9)  # the crop is centred on the white band


def test_interpolation_changes_output_and_is_validated():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    assert not torch.equal(preprocess_pil(image, 32, "bilinear"), preprocess_pil(image, 32, "bicubic"))
    with pytest.raises(ValueError):
        preprocess_pil(image, 32, "nearest")


def test_load_image_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(UserError, match="cannot read"):
        load_image(bad)


def test_preprocess_uses_registry_settings(monkeypatch):
    """`preprocess` must take resolution and interpolation from `registry.get_variant` (stubbed here)."""
    settings = {"small-bicubic": (48, "bicubic"), "big-bilinear": (64, "bilinear")}
    fake = types.ModuleType("mobileclip_deploy.registry")
    fake.get_variant = lambda name: types.SimpleNamespace(image_size=settings[name][0], interpolation=settings[name][1])
    monkeypatch.setitem(sys.modules, "mobileclip_deploy.registry", fake)

    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    for name, (size, interpolation) in settings.items():
        assert torch.equal(preprocess(image, name), preprocess_pil(image, size, interpolation))

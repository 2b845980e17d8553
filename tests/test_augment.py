"""DataCompDR augmentation: the stored encoding, torchvision's op semantics on PIL, and exact replay."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobileclip_deploy.training.augment import OP_NAMES, apply_augmentation, replay_augmentation, sample_augmentation


@pytest.fixture(scope="module")
def photo(shared_dir: Path) -> Image.Image:
    return Image.open(sorted((shared_dir / "data" / "imagenet-samples").glob("*.JPEG"))[3]).convert("RGB")


def test_encoding_matches_datacompdr_values() -> None:
    """Signed, scaled magnitudes at bin 9 of 31 (training.md 1.3: shear 0.09, translate 30.45 px at 224, ...)."""
    expected = {"ShearX": 0.09, "ShearY": 0.09, "TranslateX": 30.45, "TranslateY": 30.45, "Rotate": 9.0,
                "Brightness": 0.27, "Color": 0.27, "Contrast": 0.27, "Sharpness": 0.27, "Posterize": 7.0,
                "Solarize": 178.5, "Identity": 0.0, "AutoContrast": 0.0, "Equalize": 0.0}
    rng = np.random.default_rng(0)
    seen, signs = set(), set()
    for _ in range(400):
        box, ops = sample_augmentation(rng, 500, 375)
        i, j, h, w = box
        assert 0 <= i and 0 <= j and i + h <= 375 and j + w <= 500
        assert 0.08 * 0.99 <= h * w / (500 * 375) <= 1.0 and 3 / 4 * 0.95 <= w / h <= 4 / 3 * 1.05
        assert len(ops) == 2
        for index, magnitude in ops:
            name = OP_NAMES[index]
            seen.add(name)
            assert abs(abs(magnitude) - expected[name]) < 0.01, (name, magnitude)
            signs.add((name, math.copysign(1, magnitude)))
    assert seen == set(OP_NAMES)
    assert ("Rotate", -1.0) in signs and ("Rotate", 1.0) in signs and ("Solarize", -1.0) not in signs
    assert json.loads(json.dumps(sample_augmentation(np.random.default_rng(1), 64, 64))) == \
        sample_augmentation(np.random.default_rng(1), 64, 64)


def _ops(*ops: tuple[str, float]) -> list:
    return [[OP_NAMES.index(n), m] for n, m in ops]


def test_crop_box_is_in_original_pixels(photo: Image.Image) -> None:
    box = [20, 30, 100, 100]
    view = replay_augmentation(photo, [box, _ops(("Identity", 0.0), ("Identity", 0.0))], 100)
    assert np.array_equal(view.permute(1, 2, 0).numpy(), np.asarray(photo)[20:120, 30:130])


def test_geometric_ops_follow_torchvision(photo: Image.Image) -> None:
    """Translate shifts by int(m) with fill 0; ShearX shears about the top-left corner (center=[0, 0])."""
    box = [0, 0, photo.height, photo.width]
    base = np.asarray(photo.resize((64, 64), Image.BICUBIC)).astype(int)
    moved = replay_augmentation(photo, [box, _ops(("TranslateX", -30.45), ("TranslateY", 10.7))], 64)
    moved = moved.permute(1, 2, 0).numpy().astype(int)
    ref = np.zeros_like(base)
    ref[10:, :64 - 30] = base[:64 - 10, 30:]
    assert np.array_equal(moved, ref)
    sheared = replay_augmentation(photo, [box, _ops(("ShearX", 0.09), ("Identity", 0.0))], 64)
    sheared = sheared.permute(1, 2, 0).numpy().astype(int)
    ys, xs = np.mgrid[0:64, 0:64]
    src = np.floor(xs + 0.5 + 0.09 * (ys + 0.5)).astype(int)  # inverse map x_in = x + m y, PIL pixel centres
    inside = src < 64
    ref = np.where(inside[..., None], base[ys, np.minimum(src, 63)], 0)
    assert np.mean(np.abs(sheared - ref) > 0) < 0.01 and sheared[0].tolist() == base[0].tolist()


def test_photometric_ops_within_one_grey_level(photo: Image.Image) -> None:
    box = [0, 0, photo.height, photo.width]
    base = np.asarray(photo.resize((48, 48), Image.BICUBIC)).astype(int)

    def run(*ops):
        return replay_augmentation(photo, [box, _ops(*ops)], 48).permute(1, 2, 0).numpy().astype(int)

    assert np.abs(run(("Solarize", 178.5), ("Identity", 0.0)) - np.where(base >= 178.5, 255 - base, base)).max() == 0
    assert np.abs(run(("Posterize", 7.0), ("Identity", 0.0)) - (base & 0xFE)).max() == 0
    assert np.abs(run(("Brightness", -0.27), ("Identity", 0.0)) - np.clip(base * 0.73, 0, 255)).max() <= 1
    grey = np.round((base * np.array([299, 587, 114])).sum(-1, keepdims=True) / 1000)  # PIL's uint8 L image
    assert np.abs(run(("Color", 0.27), ("Identity", 0.0)) - np.clip(grey + 1.27 * (base - grey), 0, 255)).max() <= 1


def test_replay_of_stored_entry_equals_the_view(photo: Image.Image) -> None:
    """What a JSON round trip of the stored entry replays is the view generated from it (teacher's pixels)."""
    rng = np.random.default_rng(7)
    for _ in range(12):
        param = sample_augmentation(rng, photo.width, photo.height)
        seen = np.asarray(apply_augmentation(photo, param, 224), dtype=int)
        again = replay_augmentation(photo, json.loads(json.dumps(param)), 224).permute(1, 2, 0).numpy()
        assert again.dtype == np.uint8 and again.shape == (224, 224, 3)
        assert np.abs(again.astype(int) - seen).max() <= 1


def test_skipped_rand_augment_replays_the_crop(photo: Image.Image) -> None:
    """The released generator writes `[[i, j, h, w], null]` when RandAugment was skipped: the crop alone."""
    param = json.loads("[[20, 30, 100, 120], null]")
    view = replay_augmentation(photo, param, 64).permute(1, 2, 0).numpy()
    want = np.asarray(photo.crop((30, 20, 150, 120)).resize((64, 64), Image.BICUBIC))
    assert np.array_equal(view, want)

"""Every Pillow mode reaches the model as the same 8-bit RGB picture, upright, through the one loader
(`load_image`, used by preprocess, classify, eval and calibration); each mode is compared with an 8-bit RGB
version of the same photo, written to disk and read back as a user's file would be."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobileclip_deploy.preprocess import BACKGROUND, load_image, preprocess_pil


@pytest.fixture(scope="module")
def photo(shared_dir: Path) -> Image.Image:
    """A small real photo (odd size, so a rotation is visible in the shape)."""
    with Image.open(shared_dir / "data" / "imagenet-samples" / "n01534433_junco.JPEG") as image:
        return image.convert("RGB").resize((48, 36))


def _gray(photo: Image.Image) -> Image.Image:
    return photo.convert("L")


def _alpha() -> np.ndarray:
    """A left-to-right alpha ramp 0..255, so every blend weight occurs."""
    return np.tile(np.linspace(0, 255, 48).round().astype(np.uint8), (36, 1))


def _over_background(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None].astype(np.float64) / 255.0
    return rgb * a + np.array(BACKGROUND, dtype=np.float64) * (1 - a)


# mode -> (the picture in that mode, the expected 8-bit RGB, file suffix, max abs difference allowed)
Case = Callable[[Image.Image], tuple[Image.Image, np.ndarray, str, float]]
CASES: dict[str, Case] = {
    "L": lambda p: (_gray(p), np.asarray(_gray(p).convert("RGB")), ".png", 0),
    "1": lambda p: (_gray(p).convert("1"), np.asarray(_gray(p).convert("1").convert("L").convert("RGB")), ".png", 0),
    "P": lambda p: (p.quantize(64), np.asarray(p.quantize(64).convert("RGB")), ".png", 0),
    "CMYK": lambda p: (p.convert("CMYK"), np.asarray(p), ".tif", 0),
    "I;16": lambda p: (Image.fromarray(np.asarray(_gray(p)).astype(np.uint16) * 257),
                       np.asarray(_gray(p).convert("RGB")), ".png", 0),
    "I": lambda p: (Image.fromarray(np.asarray(_gray(p)).astype(np.int32) * 257),
                    np.asarray(_gray(p).convert("RGB")), ".tif", 0),
    "F": lambda p: (_gray(p).convert("F"), np.asarray(_gray(p).convert("RGB")), ".tif", 0),
    "RGBA": lambda p: (Image.fromarray(np.dstack([np.asarray(p), _alpha()]), "RGBA"),
                       _over_background(np.asarray(p), _alpha()), ".png", 0.5),
    "LA": lambda p: (Image.fromarray(np.dstack([np.asarray(_gray(p)), _alpha()]), "LA"),
                     _over_background(np.asarray(_gray(p).convert("RGB")), _alpha()), ".png", 0.5),
}


def _palette_with_transparency(p: Image.Image) -> tuple[Image.Image, np.ndarray, str, float]:
    pal = p.quantize(64)
    index = np.asarray(pal)
    transparent = int(index[0, 0])  # the colour of the top-left pixel becomes see-through
    pal.info["transparency"] = transparent
    expected = np.asarray(pal.convert("RGB")).copy()
    expected[index == transparent] = BACKGROUND
    return pal, expected, ".png", 0


CASES["P+transparency"] = _palette_with_transparency


@pytest.mark.parametrize("mode", sorted(CASES))
def test_mode_loads_as_the_same_rgb_picture(tmp_path: Path, photo: Image.Image, mode: str) -> None:
    image, expected, suffix, tol = CASES[mode](photo)
    path = tmp_path / f"picture{suffix}"
    image.save(path)
    with Image.open(path) as reopened:  # the file really has the mode under test
        assert reopened.mode.split(";")[0] == image.mode.split(";")[0] or mode == "I;16"
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == image.size
    diff = np.abs(np.asarray(loaded, dtype=np.float64) - expected)
    assert diff.max() <= tol, f"{mode}: max difference {diff.max()}"


def test_16_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    """A mid-grey 16-bit sample (32768) is 128 in 8 bits; `convert("RGB")` alone would give 255."""
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(path)
    assert np.asarray(load_image(path))[0, 0].tolist() == [128, 128, 128]


@pytest.mark.parametrize("orientation, stored", [(3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_90),
                                                 (8, Image.Transpose.ROTATE_270)])
def test_exif_orientation_is_applied(tmp_path: Path, photo: Image.Image, orientation: int,
                                     stored: Image.Transpose) -> None:
    """A phone stores the sensor's pixels and an EXIF tag saying how to turn them; we see the upright picture."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.png"
    photo.transpose(stored).save(path, exif=exif)
    loaded = load_image(path)
    assert loaded.size == photo.size
    assert np.array_equal(np.asarray(loaded), np.asarray(photo))


def test_preprocess_converts_an_in_memory_image_the_same_way(photo: Image.Image) -> None:
    rgba = Image.fromarray(np.dstack([np.asarray(photo), _alpha()]), "RGBA")
    expected = _over_background(np.asarray(photo), _alpha()).round().astype(np.uint8)
    ours = preprocess_pil(rgba, 32)
    reference = preprocess_pil(Image.fromarray(expected), 32)
    assert (ours - reference).abs().max().item() <= 1 / 255 + 1e-6

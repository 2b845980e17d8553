"""DataCompDR's stored augmentation: RandomResizedCrop + RandAugment, sampled once, replayed at train time.

The semantics are torchvision's on PIL images (training.md section 1.3): the RRC box comes from
`RandomResizedCrop.get_params` (scale 0.08-1, ratio 3/4-4/3, in original-image pixels), the crop is resized with
PIL (bicubic, antialiased), then RandAugment applies 2 of 14 ops at magnitude bin 9 of 31 with NEAREST
interpolation and fill 0. torchvision itself cannot be imported on this stack, so the ops are written on Pillow
exactly as torchvision's PIL backend calls them. The stored entry is DataCompDR's compressed form
`[[i, j, h, w], [[op_idx, magnitude], [op_idx, magnitude]]]` with each magnitude already signed and scaled, so a
DataCompDR `param_aug` replays here and ours replays in DataCompDR's code.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
NUM_OPS, MAGNITUDE, NUM_BINS = 2, 9, 31
OP_NAMES = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
            "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
INTERPOLATIONS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}

AUGMENTATION_SPEC: dict = {
    "encoding": "DataCompDR param_aug: [[i, j, h, w], [[op_idx, magnitude], [op_idx, magnitude]]]",
    "random_resized_crop": {"scale": list(RRC_SCALE), "ratio": [3 / 4, 4 / 3], "interpolation": "bicubic",
                            "box": "top, left, height, width in original-image pixels"},
    "rand_augment": {"num_ops": NUM_OPS, "magnitude": MAGNITUDE, "num_magnitude_bins": NUM_BINS,
                     "interpolation": "nearest", "fill": 0, "ops": list(OP_NAMES),
                     "magnitude_stored": "signed and scaled (translations in pixels of the crop_size crop)"},
    "horizontal_flip": False,
    "semantics": "torchvision RandomResizedCrop + RandAugment on PIL images",
}


def _magnitude(op: str, crop_size: int) -> tuple[float, bool]:
    """torchvision's RandAugment magnitude at bin MAGNITUDE (float32 linspace, as torch computes it) and if signed."""
    def bin_of(lo: float, hi: float) -> float:
        return float(np.linspace(lo, hi, NUM_BINS, dtype=np.float32)[MAGNITUDE])

    table = {
        "Identity": (0.0, False), "AutoContrast": (0.0, False), "Equalize": (0.0, False),
        "ShearX": (bin_of(0.0, 0.3), True), "ShearY": (bin_of(0.0, 0.3), True),
        "TranslateX": (bin_of(0.0, 150.0 / 331.0 * crop_size), True),
        "TranslateY": (bin_of(0.0, 150.0 / 331.0 * crop_size), True),
        "Rotate": (bin_of(0.0, 30.0), True),
        "Brightness": (bin_of(0.0, 0.9), True), "Color": (bin_of(0.0, 0.9), True),
        "Contrast": (bin_of(0.0, 0.9), True), "Sharpness": (bin_of(0.0, 0.9), True),
        "Posterize": (float(8 - round(MAGNITUDE / ((NUM_BINS - 1) / 4))), False),
        "Solarize": (bin_of(255.0, 0.0), False),
    }
    return table[op]


def crop_box(rng: np.random.Generator, width: int, height: int) -> list[int]:
    """torchvision's `RandomResizedCrop.get_params`: 10 tries at a random area and aspect, else a central crop."""
    area = height * width
    log_lo, log_hi = math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])
    for _ in range(10):
        target = area * rng.uniform(*RRC_SCALE)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return [int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w]
    ratio = width / height
    if ratio < RRC_RATIO[0]:
        w, h = width, int(round(width / RRC_RATIO[0]))
    elif ratio > RRC_RATIO[1]:
        h, w = height, int(round(height * RRC_RATIO[1]))
    else:
        w, h = width, height
    return [(height - h) // 2, (width - w) // 2, h, w]


def sample_augmentation(rng: np.random.Generator, width: int, height: int, crop_size: int = 224) -> list:
    """One DataCompDR `param_aug` entry for an image of `width` x `height` (RRC box + 2 signed RandAugment ops)."""
    ops = []
    for _ in range(NUM_OPS):
        index = int(rng.integers(len(OP_NAMES)))
        magnitude, signed = _magnitude(OP_NAMES[index], crop_size)
        if signed and rng.integers(2):
            magnitude = -magnitude
        ops.append([index, magnitude])
    return [crop_box(rng, width, height), ops]


def _affine(img: Image.Image, angle: float = 0.0, translate: tuple[int, int] = (0, 0),
            shear: tuple[float, float] = (0.0, 0.0), center: tuple[float, float] | None = None) -> Image.Image:
    """torchvision `F.affine` on PIL: the inverse matrix of rotate-scale-shear about `center`, NEAREST, fill 0."""
    cx, cy = center if center is not None else (img.width * 0.5, img.height * 0.5)
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [d, -b, 0.0, -c, a, 0.0]
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty) + cx
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty) + cy
    return img.transform(img.size, Image.AFFINE, m, Image.NEAREST, fillcolor=(0,) * len(img.getbands()))


OPS: dict[str, Callable[[Image.Image, float], Image.Image]] = {
    "Identity": lambda img, m: img,
    "ShearX": lambda img, m: _affine(img, shear=(math.degrees(math.atan(m)), 0.0), center=(0.0, 0.0)),
    "ShearY": lambda img, m: _affine(img, shear=(0.0, math.degrees(math.atan(m))), center=(0.0, 0.0)),
    "TranslateX": lambda img, m: _affine(img, translate=(int(m), 0)),
    "TranslateY": lambda img, m: _affine(img, translate=(0, int(m))),
    "Rotate": lambda img, m: img.rotate(m, Image.NEAREST, expand=False, fillcolor=(0,) * len(img.getbands())),
    "Brightness": lambda img, m: ImageEnhance.Brightness(img).enhance(1.0 + m),
    "Color": lambda img, m: ImageEnhance.Color(img).enhance(1.0 + m),
    "Contrast": lambda img, m: ImageEnhance.Contrast(img).enhance(1.0 + m),
    "Sharpness": lambda img, m: ImageEnhance.Sharpness(img).enhance(1.0 + m),
    "Posterize": lambda img, m: ImageOps.posterize(img, int(m)),
    "Solarize": lambda img, m: ImageOps.solarize(img, m),
    "AutoContrast": lambda img, m: ImageOps.autocontrast(img),
    "Equalize": lambda img, m: ImageOps.equalize(img),
}


def apply_augmentation(image: Image.Image, param: list, size: int, interpolation: str = "bicubic") -> Image.Image:
    """The augmented view as a PIL image: crop the stored box, resize to `size`, run the stored ops in order."""
    (top, left, h, w), ops = param[0], param[1]
    view = image.convert("RGB").crop((left, top, left + w, top + h)).resize((size, size), INTERPOLATIONS[interpolation])
    # The released generator writes `[[i, j, h, w], null]` when RandAugment was skipped (its p < 1): crop only.
    for index, magnitude in ops or ():
        view = OPS[OP_NAMES[int(index)]](view, float(magnitude))
    return view


def replay_augmentation(image: Image.Image, param: list, size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """The stored view as uint8 (3, size, size); at the teacher's size these are exactly the pixels it saw."""
    pixels = np.asarray(apply_augmentation(image, param, size, interpolation), dtype=np.uint8)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()

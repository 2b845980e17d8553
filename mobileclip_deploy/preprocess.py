"""Image preprocessing as the reference transform does it: shorter side resize, center crop, [0, 1] CHW.

Implemented with PIL and torch only (no torchvision) so the exact resize/crop arithmetic is visible
and can be reproduced by app-side code. Mean/std normalization is not done here: it lives inside
each model's `encode_image`, so exported models take the same [0, 1] input for every variant.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import UserError

__all__ = ["image_files", "load_image", "preprocess", "preprocess_pil", "resize_shorter_side", "center_crop"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def image_files(folder: str | os.PathLike[str], recursive: bool = False, role: str = "image folder",
                hint: str = "") -> list[Path]:
    """Image files of a folder in sorted order; a missing or image-less folder is a `UserError` naming its `role`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{role} not found: {folder}")
    found = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir())
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise UserError(f"{role} {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}){hint}")
    return found


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open and fully decode an image, turning a missing or unreadable file into a `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from exc


def resize_shorter_side(image: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """Resize so the shorter side is `size`; the longer side is truncated like torchvision's `Resize(int)`."""
    if interpolation not in _RESAMPLE:
        raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {sorted(_RESAMPLE)}")
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return image
    # PIL's resize filters are antialiased (support scales with the downscale factor).
    return image.resize((new_w, new_h), _RESAMPLE[interpolation])


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """Crop the central size×size square, rounding the offsets like torchvision's `CenterCrop`."""
    w, h = image.size
    if w < size or h < size:
        raise ValueError(f"image {w}x{h} is smaller than the crop {size}x{size}")
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def preprocess_pil(image: Image.Image, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """3×size×size float32 in [0, 1]: RGB conversion, shorter-side resize, center crop."""
    image = center_crop(resize_shorter_side(image.convert("RGB"), size, interpolation), size)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def preprocess(image: Image.Image, name: str) -> torch.Tensor:
    """Preprocess for model variant `name`, with its resolution and interpolation from the registry."""
    from .registry import get_variant  # deferred: the low-level helpers must work without the registry

    variant = get_variant(name)
    return preprocess_pil(image, variant.image_size, variant.interpolation)

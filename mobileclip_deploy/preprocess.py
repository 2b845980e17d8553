"""Image preprocessing as the reference transform does it: shorter side resize, center crop, [0, 1] CHW.

Implemented with PIL and torch only (no torchvision) so the exact resize/crop arithmetic is visible
and can be reproduced by app-side code. Mean/std normalization is not done here: it lives inside
each model's `encode_image`, so exported models take the same [0, 1] input for every variant.

Every picture becomes 8-bit RGB the same way (`to_rgb`), for `preprocess`, `classify`, `eval` and calibration
alike: EXIF orientation applied (phone photos are stored sideways), 16-bit samples scaled (not clipped) to 8 bits,
palette/CMYK/1-bit/float converted, and transparency composited on a white background (`BACKGROUND`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError

__all__ = ["image_files", "load_image", "to_rgb", "preprocess", "preprocess_pil", "resize_shorter_side",
           "center_crop", "BACKGROUND"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")

# What transparent pixels show: white, as browsers and photo viewers show a transparent PNG on a page.
BACKGROUND = (255, 255, 255)
# Integer modes holding 16-bit samples (0-65535); 8-bit is 257 times smaller (65535 / 255).
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")

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
    """Open, decode and convert an image to upright 8-bit RGB (`to_rgb`); a missing or unreadable file is a
    `UserError`. The one image loader of the package."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB of any Pillow mode, upright; a plain `convert("RGB")` clips 16-bit images to white, drops alpha
    onto black-or-garbage colour and ignores EXIF orientation."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_MODES:
        wide = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":  # Pillow's convention (as its own F -> L): float samples on the 0-255 scale
        image = Image.fromarray(np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND + (255,)), rgba).convert("RGB")
    return image.convert("RGB")


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
    """3×size×size float32 in [0, 1]: RGB conversion (`to_rgb`), shorter-side resize, center crop."""
    image = center_crop(resize_shorter_side(to_rgb(image), size, interpolation), size)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def preprocess(image: Image.Image, name: str) -> torch.Tensor:
    """Preprocess for model variant `name`, with its resolution and interpolation from the registry."""
    from .registry import get_variant  # deferred: the low-level helpers must work without the registry

    variant = get_variant(name)
    return preprocess_pil(image, variant.image_size, variant.interpolation)

"""Representative images for static quantization and parity: a folder of photos, preprocessed like the app does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mobileclip_deploy.preprocess import image_files, load_image, preprocess_pil


def list_images(folder: Path) -> list[Path]:
    """The photos in `folder` (not recursive), sorted; refuse a missing folder or one without images."""
    return image_files(folder, role="calibration folder", hint="; static quantization and parity need real photos "
                       "like the ones the app will see")


def pick(images: list[Path], limit: int) -> list[Path]:
    """`limit` images spread evenly over the sorted list, so a folder sorted by class still gives variety."""
    if limit <= 0 or limit >= len(images):
        return list(images)
    return [images[int(i * len(images) / limit)] for i in range(limit)]


def load_batch(paths: list[Path], image_size: int, interpolation: str) -> np.ndarray:
    """N×3×R×R float32 in [0, 1], preprocessed by the package's reference transform."""
    return torch.stack([preprocess_pil(load_image(p), image_size, interpolation) for p in paths]).numpy()


def synthetic_batch(count: int, image_size: int) -> np.ndarray:
    """Smooth colour gradients with texture, used for parity only when no image folder was given."""
    grid = np.linspace(0.0, 1.0, image_size, dtype=np.float32)
    rng = np.random.default_rng(0)
    out = np.empty((count, 3, image_size, image_size), dtype=np.float32)
    for i in range(count):
        fx, fy = rng.uniform(1, 6, size=2)
        for c in range(3):
            phase = rng.uniform(0, np.pi)
            out[i, c] = 0.5 + 0.5 * np.sin(fx * np.pi * grid[None, :] + fy * np.pi * grid[:, None] + phase)
    return np.clip(out + rng.normal(0, 0.03, out.shape).astype(np.float32), 0.0, 1.0)

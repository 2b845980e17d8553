"""Hand-made reinforced samples for the training tests: a fixed toy teacher, the sample photos, tiny students.

The toy teacher embeds the stored view it saw (a random projection of an 8x8 thumbnail of the replayed crop),
so a student can only agree with it by looking at the same crop; sentence and caption embeddings are random
unit vectors per member. Records follow the contract's `Sample`/`ReinforcedData` fields (helper D's reader
yields the same fields from real shards).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mobileclip_deploy.models.clip import CLIP
from mobileclip_deploy.models.text import TextConfig
from mobileclip_deploy.models.vit import ViTConfig
from mobileclip_deploy.registry import OPENAI_MEAN, OPENAI_STD, Variant
from mobileclip_deploy.training.augment import replay_augmentation, sample_augmentation
from mobileclip_deploy.training.records import Sample, TeacherInfo

# Two blocks per tower, no BatchNorm (so per-rank statistics cannot differ from the global batch's under DDP).
TINY = Variant("tiny-vit", "Tiny ViT", ViTConfig(64, 2, 2, 32, 8, conv_stem=False), TextConfig(32, 2, 1), 16, 32,
               "openclip", "MobileCLIP-S0", OPENAI_MEAN, OPENAI_STD)


THUMB = 4  # the toy teacher looks at THUMB x THUMB thumbnails of its view


def tiny_student(seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(TINY)


@dataclass
class FakeData:
    records: list[Sample]
    teachers: list[TeacherInfo]
    sentences: list[str] | None
    sentence_emb: np.ndarray | None
    has_captions: bool = True
    has_synthetic: bool = True
    context_length: int = 77
    shards: list[Path] = field(default_factory=list)

    @property
    def num_samples(self) -> int:
        return len(self.records)

    def samples(self, shards=None):
        return iter(self.records)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def make_data(photos: Path, n: int = 8, dims: tuple[int, ...] = (6, 10), n_aug: int = 2, captions: bool = True,
              synthetic: bool = True, sentences: bool = True, seed: int = 0) -> FakeData:
    """`n` photos (96 px), `n_aug` stored views each; caption k is "a photo of a <class k>", synthetic ones are
    other classes' sentences; the sentence bank is the n class sentences."""
    rng = np.random.default_rng(seed)
    files = sorted(photos.glob("*.JPEG"))[:n]
    names = [f"a photo of a {f.stem.split('_', 1)[1].replace('_', ' ')}" for f in files]
    proj = [rng.standard_normal((3 * THUMB * THUMB, d)) for d in dims]
    bank = np.concatenate([_unit(rng.standard_normal((n, d))) for d in dims], axis=1).astype(np.float32)

    def teacher_view(image: Image.Image, param: list) -> np.ndarray:
        view = replay_augmentation(image, param, 32).float()[None] / 255.0
        pix = torch.nn.functional.adaptive_avg_pool2d(view, THUMB).numpy().reshape(-1)
        pix = pix - pix.mean() + 1e-4  # + 1e-4: a flat view still gets a direction
        return np.concatenate([_unit(pix @ p) for p in proj]).astype(np.float32)

    records = []
    for k, f in enumerate(files):
        image = Image.open(f).convert("RGB").resize((96, 96), Image.BICUBIC)
        params = [sample_augmentation(rng, 96, 96, crop_size=32) for _ in range(n_aug)]
        syn = [(k + 1) % n, (k + 2) % n] if synthetic else []
        rows = ([k] if captions else []) + syn
        records.append(Sample(f"photo{k:03d}", image, params, np.stack([teacher_view(image, p) for p in params]),
                              bank[rows] if rows else None, [names[k]] if captions else [],
                              [names[j] for j in syn]))
    return FakeData(records, [TeacherInfo(f"toy-{i}", d, 100.0) for i, d in enumerate(dims)],
                    names if sentences else None, bank if sentences else None, captions, synthetic)


def without_synthetic_every_other(data: FakeData) -> FakeData:
    """The data as reinforce writes it when the synthetic-caption file names only some photos (every other one)."""
    partial = copy.copy(data)
    partial.records = [s if k % 2 else dataclasses.replace(s, synthetic=[], text_emb=s.text_emb[:len(s.captions)])
                       for k, s in enumerate(data.records)]
    return partial

"""Collate reinforced samples into a training batch: the stored crop the teacher saw, at the student's size.

Which stored augmentation and which synthetic caption a sample contributes is a pure function of
(seed, epoch, uid), so a resumed run and every rank of a distributed one draw exactly the same
(pitfall 10: the reference code draws them from a global RNG and cannot replay them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mobileclip_deploy.tokenizer import tokenize

TRAIN_INTERPOLATION = "bicubic"  # open_clip's training RandomResizedCrop, hence the papers' student crops


def pick(seed: int, epoch: int, uid: str, what: str, n: int) -> int:
    """A deterministic index in [0, n) for (seed, epoch, uid, what); independent across `what`."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{what}/{uid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n


@dataclass
class Batch:
    """One local batch: pixels in [0, 1] (the model normalizes), tokens and teacher targets per caption set."""

    uids: list[str]
    images: torch.Tensor  # (B, 3, S, S) float32 in [0, 1]
    teacher_image: torch.Tensor  # (B, sum(teacher dims)) float32, one unit-norm slice per teacher
    tokens: dict[str, torch.Tensor]  # caption set ("real", "synthetic") -> (B, context) int64
    # caption set -> (B, sum(teacher dims)); a zero row marks a sample without a caption of that set (`has_text`)
    teacher_text: dict[str, torch.Tensor]

    def to(self, device: torch.device) -> Batch:
        return Batch(self.uids, self.images.to(device), self.teacher_image.to(device),
                     {k: v.to(device) for k, v in self.tokens.items()},
                     {k: v.to(device) for k, v in self.teacher_text.items()})


def has_text(teacher_text: torch.Tensor) -> torch.Tensor:
    """Which rows hold a caption: stored teacher rows are unit-norm per slice (checked on read), so only the
    placeholder of a sample without a caption of the set is all zero."""
    return teacher_text.abs().amax(dim=-1) > 0


def caption_of(s, caption_set: str, seed: int, epoch: int) -> tuple[str, np.ndarray] | None:
    """The sample's caption of a set and its teacher row, or None when it has none (reinforce lets synthetic
    captions cover only some photos)."""
    if caption_set == "real":
        return (s.captions[0], s.text_emb[0]) if s.captions else None
    # a matching key that has captions, then one of its captions (the released trainer's draw)
    counts = s.synthetic_counts or [len(s.synthetic)]
    keys = [k for k, n in enumerate(counts) if n]
    if not keys:
        return None
    key = keys[pick(seed, epoch, s.uid, "synkey", len(keys))] if len(keys) > 1 else keys[0]
    j = sum(counts[:key]) + pick(seed, epoch, s.uid, "syn", counts[key])
    return s.synthetic[j], s.text_emb[len(s.captions) + j]


def as_float_pixels(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels.float()


def collate(samples: Sequence, epochs: Sequence[int], seed: int, size: int, context_length: int,
            caption_sets: Sequence[str] = ("real", "synthetic"), augmentation: int | None = None) -> Batch:
    """Replay one stored augmentation per sample at `size` and pair it with that augmentation's teacher row.

    The crop is resampled bicubically whatever the student: the released training code copies open_clip's
    training transform, whose RandomResizedCrop is bicubic for every model (the variant's own interpolation is
    for inference preprocessing only).

    `epochs[i]` is the epoch sample i is drawn in (a batch can straddle two). `augmentation` fixes the index
    (evaluation uses 0); otherwise it is drawn by `pick`. Text embedding rows
    follow the v1 layout: the ground-truth captions first, then the synthetic ones. A sample without a caption of
    a set keeps its place in that set with an empty caption and a zero teacher row, which the loss leaves out.
    """
    from mobileclip_deploy.training.augment import replay_augmentation

    images, t_image = [], []
    captions: dict[str, list[str]] = {k: [] for k in caption_sets}
    t_text: dict[str, list[np.ndarray]] = {k: [] for k in caption_sets}
    for s, epoch in zip(samples, epochs, strict=True):
        a = augmentation if augmentation is not None else pick(seed, epoch, s.uid, "aug", len(s.param_aug))
        images.append(as_float_pixels(replay_augmentation(s.image, s.param_aug[a], size, TRAIN_INTERPOLATION)))
        t_image.append(np.asarray(s.image_emb[a], dtype=np.float32))
        for caption_set in caption_sets:
            caption, row = caption_of(s, caption_set, seed, epoch) or ("", np.zeros(s.image_emb.shape[1]))
            captions[caption_set].append(caption)
            t_text[caption_set].append(np.asarray(row, dtype=np.float32))
    # Synthetic captions from long-context captioners are cut to the student's context (pitfall 7).
    return Batch([s.uid for s in samples], torch.stack(images), torch.from_numpy(np.stack(t_image)),
                 {k: tokenize(v, context_length) for k, v in captions.items()},
                 {k: torch.from_numpy(np.stack(v)) for k, v in t_text.items()})

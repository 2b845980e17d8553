"""Reinforced-data fixtures for tests: public DataCompDR-12M shards in their v1 layout, made from the sample photos.

`write_datacompdr_v1` writes what the public dataset holds after the join with the DataComp images (jpg, txt,
url.txt, syn.json, paug.json `{"param_aug": [...]}` as the released writer emits it, npz with `image_emb`
(n_aug, 1536) and `text_emb` (1 + n_syn, 1536), json with uid and sha256), and no manifest. The toy teachers
embed the view they saw (a fixed random projection of a 16x16 thumbnail of the replayed augmentation), so a
student that learns from it must look at the stored crop; caption embeddings are one random unit vector per
class and teacher.

`tiny_teacher` is the test-only way to a small teacher: a 2-block open_clip CLIP ViT in the native layout (what
`openclip-vit-b-16` / `openclip-vit-l-14` are, scaled down), built with `CLIP(variant)` and handed to
`training.reinforce.reinforce` as a `Teacher`, without going through the registry.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from mobileclip_deploy.models.text import TextConfig
from mobileclip_deploy.models.vit import ViTConfig
from mobileclip_deploy.registry import OPENAI_MEAN, OPENAI_STD, Variant
from mobileclip_deploy.training.augment import replay_augmentation, sample_augmentation
from mobileclip_deploy.training.records import ShardWriter, encode_sample, unit_slices

DIMS = (768, 768)


def tiny_teacher(quick: bool, width: int = 32, image_size: int = 32) -> Variant:
    """A 2-block open_clip CLIP ViT in the native layout (what the full-size teachers are, scaled down)."""
    image = ViTConfig(width, 2, 2, image_size, 8, conv_stem=False, eps=1e-5, pos_embed_has_cls=True, norm_pre=True,
                      quick_gelu=quick)
    return Variant("tiny-clip", "tiny", image, TextConfig(24, 2, 2, causal=True, quick_gelu=quick), 16, image_size,
                   "openclip-native", "", OPENAI_MEAN, OPENAI_STD, "bicubic")


def photos(shared_dir: Path, n: int) -> list[Path]:
    return sorted((shared_dir / "data" / "imagenet-samples").glob("*.JPEG"))[:n]


def class_name(photo: Path) -> str:
    return photo.stem.split("_", 1)[1].replace("_", " ") if "_" in photo.stem else photo.stem


def write_datacompdr_v1(folder: Path, files: list[Path], n_aug: int = 2, n_syn: int = 2, shard_size: int = 4,
                        dims: tuple[int, ...] = DIMS, seed: int = 0) -> list[str]:
    """Shards `00000000.tar`, ... in `folder`; returns the uids in order."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    proj = np.concatenate([rng.standard_normal((3 * 16 * 16, d)) for d in dims], axis=1)
    names = [f"a photo of a {class_name(f)}" for f in files]
    bank = unit_slices(rng.standard_normal((len(files), sum(dims))), dims)
    uids = []
    for start in range(0, len(files), shard_size):
        writer = ShardWriter(folder / f"{start // shard_size:08d}.tar")
        for k in range(start, min(start + shard_size, len(files))):
            data = files[k].read_bytes()
            image = Image.open(files[k]).convert("RGB")
            params = [sample_augmentation(rng, image.width, image.height) for _ in range(n_aug)]
            views = [replay_augmentation(image, p, 16).float().numpy().reshape(-1) / 255.0 for p in params]
            image_emb = unit_slices((np.stack(views) - 0.5) @ proj, dims)
            syn = [(k + 1 + s) % len(files) for s in range(n_syn)]
            uid = hashlib.sha256(data).hexdigest()[:32]
            record = encode_sample(uid, data, "jpg", params, image_emb, bank[[k, *syn]], [names[k]],
                                   [names[j] for j in syn])
            record["url.txt"] = f"https://example.invalid/{files[k].name}".encode()
            writer.write(record)
            uids.append(uid)
        writer.close()
    return uids

"""`reinforce`: run the teachers once over a photo folder and store what they saw and said (training.md section 1).

Per photo: K augmentations drawn in DataCompDR's encoding (augment.py), each teacher's image embedding of every
stored view (one view per augmentation at the largest teacher's size, bicubic-resized for smaller teachers, as
the released generator makes them), and each teacher's text embedding of the ground-truth and synthetic
captions; optionally a sentence bank embedded once.
The unit of work is a shard: written as `.partial`, renamed when whole and then listed in `done.jsonl`, so an
interrupted run redoes only unfinished shards and never shows one as finished. Under `torchrun` rank r takes
shards r, r + world, ...; rank 0 writes the sentence bank and, once every rank is done, `manifest.json`.
"""

from __future__ import annotations

import csv
import fcntl
import functools
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import nn

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.training.augment import AUGMENTATION_SPEC, replay_augmentation, sample_augmentation
from mobileclip_deploy.training.records import (FORMAT, MANIFEST, PLAN, ShardWriter, TeacherInfo, encode_sample,
                                                unit_slices, write_sentence_bank)

IMAGE_SUFFIXES = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}
DONE = "done.jsonl"
SHARDS = "shards"


@dataclass
class Teacher:
    """A loaded teacher: its model (eval mode) and what the records say about it."""

    info: TeacherInfo
    model: nn.Module


def load_teacher(spec: str, scale: float | None = None) -> Teacher:
    """`NAME=CHECKPOINT` -> the registry variant loaded strictly (any variant can teach: ViTs, MobileCLIPs)."""
    from mobileclip_deploy import create_model
    from mobileclip_deploy.checkpoint import resolve_checkpoint_file
    from mobileclip_deploy.hashing import sha256_path
    from mobileclip_deploy.registry import get_variant

    name, sep, checkpoint = spec.partition("=")
    if not sep or not name or not checkpoint:
        raise UserError(f"--teacher {spec!r}: write it as NAME=CHECKPOINT, e.g. openclip-vit-l-14=open_clip_model.bin.")
    variant = get_variant(name.strip())
    file = resolve_checkpoint_file(checkpoint.strip())
    model = create_model(variant.name, file)
    info = TeacherInfo(variant.name, variant.embed_dim, 100.0 if scale is None else float(scale), sha256_path(file),
                       variant.image_size, variant.context_length)
    return Teacher(info, model)


@dataclass(frozen=True)
class Photo:
    rel: str  # path relative to the image folder (posix), or `<shard>/<key>`: the key of caption files
    path: Path
    member: str | None = None  # the image's member name when the photo comes from a webdataset shard

    @property
    def uid(self) -> str:
        """Dot-free and stable for the file's name (webdataset splits keys at the first dot)."""
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", Path(self.rel).name.split(".")[0])[:40]
        return f"{stem}-{hashlib.sha256(self.rel.encode()).hexdigest()[:12]}"

    @property
    def ext(self) -> str:
        return IMAGE_SUFFIXES[Path(self.member or self.path).suffix.lower()]

    def read(self) -> bytes:
        if self.member is None:
            return self.path.read_bytes()
        return _open_tar(self.path).extractfile(self.member).read()


@functools.lru_cache(maxsize=4)
def _open_tar(path: Path) -> tarfile.TarFile:
    return tarfile.open(path)


def _shard_photos(shards: Sequence[Path]) -> tuple[list[Photo], dict[str, list[str]]]:
    """Images of webdataset shards (e.g. img2dataset output) and their `txt` captions, by `<shard>/<key>`."""
    photos, captions = [], {}
    for shard in shards:
        try:
            members = [m for m in _open_tar(shard).getmembers() if m.isfile()]
        except (tarfile.TarError, OSError) as exc:
            raise UserError(f"--images shard {shard} is not a readable tar file ({exc}).") from None
        for m in members:
            key, _, ext = m.name.partition(".")
            rel = f"{shard.name}/{key}"
            if f".{ext.lower()}" in IMAGE_SUFFIXES:
                photos.append(Photo(rel, shard, m.name))
            elif ext == "txt":
                captions[rel] = [_open_tar(shard).extractfile(m).read().decode("utf-8")]
    return photos, captions


def list_photos(folder: Path) -> tuple[list[Photo], dict[str, list[str]]]:
    """The photos of a folder (recursive), or of webdataset shards (one .tar or a folder of them), with any
    captions the shards carry."""
    if folder.is_file() and folder.suffix == ".tar":
        photos, captions = _shard_photos([folder])
    elif folder.is_dir():
        photos = [Photo(p.relative_to(folder).as_posix(), p) for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        captions = {}
        if not photos:
            photos, captions = _shard_photos(sorted(folder.rglob("*.tar")))
    else:
        raise UserError(f"--images {folder} is neither a folder of photos nor webdataset shards (.tar).")
    if not photos:
        raise UserError(f"--images {folder} holds no photos ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    photos.sort(key=lambda p: p.rel)
    # Shard captions count only when every image has one (row 0 of text_emb must be the photo's own caption).
    return photos, captions if len(captions) == len(photos) and set(captions) == {p.rel for p in photos} else {}


def _rows(path: Path) -> list[dict]:
    """CSV (`file,caption` with or without a header) or JSONL rows."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".jsonl", ".json"):
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not JSON lines ({exc}).") from None
    rows = [r for r in csv.reader(text.splitlines()) if r]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["file", "caption"]:
        rows = rows[1:]
    if any(len(r) < 2 for r in rows):
        raise UserError(f"{path}: every CSV row needs two columns, file and caption.")
    return [{"file": r[0], "caption": r[1]} for r in rows]


def read_captions(path: Path, photos: Sequence[Photo], synthetic: bool) -> dict[str, list[str]]:
    """Photo rel path -> its caption(s); files are matched by relative path or, failing that, by name."""
    if not path.is_file():
        raise UserError(f"caption file {path} does not exist.")
    by_rel = {p.rel: p.rel for p in photos}
    by_name = {Path(p.rel).name: p.rel for p in photos}
    out: dict[str, list[str]] = {}
    for row in _rows(path):
        file = str(row.get("file", ""))
        rel = by_rel.get(file) or by_name.get(Path(file).name)
        if rel is None:
            continue
        if synthetic:
            texts = row.get("captions", row.get("syn_text", row.get("caption")))
            out.setdefault(rel, []).extend([texts] if isinstance(texts, str) else list(texts or []))
        elif "caption" in row:
            if rel in out:
                raise UserError(f"{path} gives {file} two ground-truth captions; the records hold one per photo.")
            out[rel] = [str(row["caption"])]
    if not out:
        raise UserError(f"{path} names none of the photos (match by path relative to --images, or by file name).")
    if not synthetic:
        missing = [p.rel for p in photos if p.rel not in out]
        if missing:
            raise UserError(f"{path} has no caption for {len(missing)} photo(s): {', '.join(missing[:3])}.")
    return out


def read_sentences(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"sentences file {path} does not exist.")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise UserError(f"sentences file {path} has no lines (one sentence per line).")
    return lines


@dataclass
class ReinforceConfig:
    images: Path
    out: Path
    augmentations: int = 5
    captions: Path | None = None
    synthetic: Path | None = None
    sentences: Path | None = None
    shard_size: int = 1000
    seed: int = 0
    batch_size: int = 64  # texts / sentences per teacher forward


def read_inputs(cfg: ReinforceConfig) -> tuple[list[Photo], dict, dict, list[str] | None]:
    """Photos, captions, synthetic captions and sentences, checked before any teacher is loaded."""
    if cfg.augmentations < 1 or cfg.shard_size < 1:
        raise UserError("--augmentations and --shard-size must be at least 1.")
    photos, captions = list_photos(cfg.images)
    captions = read_captions(cfg.captions, photos, False) if cfg.captions else captions
    synthetic = read_captions(cfg.synthetic, photos, True) if cfg.synthetic else {}
    sentences = read_sentences(cfg.sentences) if cfg.sentences else None
    return photos, captions, synthetic, sentences


def _sha(path: Path | None) -> str | None:
    from mobileclip_deploy.hashing import sha256_path

    return sha256_path(path) if path is not None else None


def _plan(cfg: ReinforceConfig, teachers: Sequence[Teacher], photos: Sequence[Photo]) -> dict:
    listing = hashlib.sha256("\n".join(f"{p.rel}\t{p.path.stat().st_size}" for p in photos).encode()).hexdigest()
    return {"format": FORMAT, "teachers": [asdict(t.info) for t in teachers], "augmentations": cfg.augmentations,
            "crop_size": max(t.info.image_size for t in teachers), "seed": cfg.seed, "shard_size": cfg.shard_size,
            "photos": len(photos), "photo_listing_sha256": listing, "captions_sha256": _sha(cfg.captions),
            "synthetic_sha256": _sha(cfg.synthetic), "sentences_sha256": _sha(cfg.sentences)}


def _claim_output(out: Path, plan: dict) -> None:
    """Start a new output folder, or resume one made with exactly this plan; never write into anything else."""
    from mobileclip_deploy.atomic import write_text

    plan_file = out / PLAN
    if plan_file.is_file():
        old = json.loads(plan_file.read_text())
        differ = [k for k in plan if old.get(k) != plan[k]]
        if differ:
            raise UserError(f"{out} holds a reinforce run with other settings ({', '.join(differ)} differ); "
                            "pick a new -o folder (or repeat the original command to resume it).")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not a reinforce output; refusing to write into it. Pick a new -o.")
    out.mkdir(parents=True, exist_ok=True)
    write_text(plan_file, json.dumps(plan, indent=1) + "\n", replace=True)


def _done(out: Path) -> dict[str, dict]:
    """Finished shards: listed in done.jsonl and present with the listed sha256 (else redone)."""
    from mobileclip_deploy.hashing import sha256_path

    done = {}
    if (out / DONE).is_file():
        for line in (out / DONE).read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                file = out / SHARDS / entry["shard"]
                if file.is_file() and sha256_path(file) == entry["sha256"]:
                    done[entry["shard"]] = entry
    return done


def _mark_done(out: Path, entry: dict) -> None:
    """Append one line under an exclusive lock (ranks share the file)."""
    with open(out / DONE, "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(entry) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
        fcntl.flock(fh, fcntl.LOCK_UN)


@torch.no_grad()
def _embed_texts(teachers: Sequence[Teacher], texts: Sequence[str], device: torch.device, batch: int) -> np.ndarray:
    from mobileclip_deploy.tokenizer import tokenize

    parts = []
    for t in teachers:
        rows = [t.model.encode_text(tokenize(list(texts[i:i + batch]), t.info.context_length).to(device)).float()
                for i in range(0, len(texts), batch)]
        parts.append(torch.cat(rows).cpu().numpy())
    return unit_slices(np.concatenate(parts, axis=1), [t.info.dim for t in teachers])


@torch.no_grad()
def _embed_views(teachers: Sequence[Teacher], image: Image.Image, params: list, crop: int,
                 device: torch.device) -> np.ndarray:
    """Each teacher's embedding of every stored view, as the released generator computes it: one view per
    augmentation at `crop` (the largest teacher's size; RRC bicubic, then RandAugment), resized bicubically
    (`F.interpolate`, no antialias) for a smaller teacher. That resize commutes with the normalisation the
    released code applies first, which our models apply inside. (The released loop resizes the previous
    teacher's tensor, which differs only when a smaller teacher precedes a larger one; each resize here starts
    from the full view.)"""
    views = torch.stack([replay_augmentation(image, p, crop) for p in params]).float().div(255.0).to(device)
    parts = []
    for t in teachers:
        size = t.info.image_size
        pixels = views if size == crop else F.interpolate(views, size=(size, size), mode="bicubic",
                                                          align_corners=False)
        parts.append(t.model.encode_image(pixels).float().cpu().numpy())
    return unit_slices(np.concatenate(parts, axis=1), [t.info.dim for t in teachers])


def _open_photo(photo: Photo) -> tuple[bytes, Image.Image]:
    data = photo.read()
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return data, image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise UserError(f"{photo.rel} is not a readable image ({exc}).") from None


def _versions() -> dict[str, str]:
    import PIL
    import webdataset

    from mobileclip_deploy import __version__

    return {"mobileclip_deploy": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "pillow": PIL.__version__, "webdataset": getattr(webdataset, "__version__", "unknown")}


def reinforce(cfg: ReinforceConfig, teachers: Sequence[Teacher], device: str | None = None, console=None) -> dict:
    """Write (or finish) the reinforced dataset in `cfg.out`; returns the manifest (rank 0) or this rank's part."""
    from mobileclip_deploy.atomic import write_text
    from mobileclip_deploy.training import distributed as dist

    if not teachers:
        raise UserError("give at least one --teacher NAME=CHECKPOINT.")
    photos, captions, synthetic, sentences = read_inputs(cfg)
    env = dist.init_distributed(device)
    plan = _plan(cfg, teachers, photos)
    if env.is_main:
        _claim_output(cfg.out, plan)
    dist.barrier()
    if not (cfg.out / PLAN).is_file() or json.loads((cfg.out / PLAN).read_text()) != plan:
        raise UserError(f"{cfg.out}: another run changed the plan; rerun the command.")
    for t in teachers:
        t.model.to(env.device).eval()
    crop = plan["crop_size"]
    shards = [(f"{k:08d}.tar", photos[s:s + cfg.shard_size]) for k, s in enumerate(range(0, len(photos),
                                                                                          cfg.shard_size))]
    done = _done(cfg.out)
    mine = [(k, name, batch) for k, (name, batch) in enumerate(shards)
            if k % env.world_size == env.rank and name not in done]
    progress = _progress(console, sum(len(b) for _, _, b in mine), env.rank)
    with progress:
        task = progress.add_task("reinforce", total=sum(len(b) for _, _, b in mine))
        for k, name, batch in mine:
            writer = ShardWriter(cfg.out / SHARDS / name)
            try:
                for n, photo in enumerate(batch):
                    data, image = _open_photo(photo)
                    rng = np.random.default_rng([cfg.seed, k * cfg.shard_size + n])
                    params = [sample_augmentation(rng, image.width, image.height, crop)
                              for _ in range(cfg.augmentations)]
                    gt, syn = captions.get(photo.rel, []), synthetic.get(photo.rel, [])
                    text_emb = _embed_texts(teachers, gt + syn, env.device, cfg.batch_size) if gt or syn else None
                    views = _embed_views(teachers, image, params, crop, env.device)
                    writer.write(encode_sample(photo.uid, data, photo.ext, params, views, text_emb, gt, syn,
                                               {"file": photo.rel}))
                    progress.advance(task)
            except BaseException:
                writer.abort()
                raise
            _mark_done(cfg.out, {"shard": name, "samples": writer.count, "sha256": writer.close(),
                                 "captions": sum(1 for p in batch if p.rel in captions),
                                 "synthetic": sum(len(synthetic.get(p.rel, [])) for p in batch)})
    if env.is_main and sentences is not None:
        write_sentence_bank(cfg.out, sentences, _embed_texts(teachers, sentences, env.device, cfg.batch_size))
    dist.barrier()
    if not env.is_main:
        return {"rank": env.rank, "shards": [name for _, name, _ in mine]}
    done = _done(cfg.out)
    if len(done) != len(shards):
        raise UserError(f"{len(shards) - len(done)} shard(s) of {cfg.out} are unfinished; rerun to finish them.")
    entries = [done[name] for name, _ in shards]
    manifest = {
        "format": FORMAT, "teachers": plan["teachers"], "context_length": min(t.info.context_length for t in teachers),
        "augmentation": {**AUGMENTATION_SPEC, "crop_size": crop, "per_image": cfg.augmentations, "seed": cfg.seed},
        "counts": {"samples": sum(e["samples"] for e in entries), "shards": len(entries),
                   "captions": sum(e["captions"] for e in entries), "synthetic": sum(e["synthetic"] for e in entries),
                   "sentences": len(sentences) if sentences else 0},
        "shards": [{"name": f"{SHARDS}/{e['shard']}", "samples": e["samples"], "sha256": e["sha256"]} for e in entries],
        "sources": {"images": str(cfg.images), "captions": str(cfg.captions) if cfg.captions else None,
                    "synthetic_captions": str(cfg.synthetic) if cfg.synthetic else None,
                    "sentences": str(cfg.sentences) if cfg.sentences else None},
        "tool_versions": _versions(),
    }
    write_text(cfg.out / MANIFEST, json.dumps(manifest, indent=1) + "\n", replace=True)
    return manifest


def _progress(console, total: int, rank: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(f"reinforce (rank {rank})" if rank else "reinforce"), BarColumn(),
                    MofNCompleteColumn(), TimeRemainingColumn(), console=console, disable=console is None or not total)

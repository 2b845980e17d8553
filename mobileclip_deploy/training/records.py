"""Reinforced records: webdataset tar shards in DataCompDR's per-sample layout (training.md section 1.2).

One sample = the tar members sharing a key (the uid): the image (`jpg`/`png`/...), `txt` (ground-truth caption),
`syn.json` (`{"syn_text": [...]}`), `paug.json` (`{"param_aug": [...]}`), `npz` (`image_emb` one row per stored
augmentation, `text_emb` row 0 the caption then the synthetic ones: the v1 layout), `json` (`{"uid", "sha256"}`).
Our datasets add `manifest.json` (teachers, augmentation spec, counts) and `sentences.npz` (the sentence bank)
beside the shards. The public DataCompDR-12M shards have no manifest: they are read with two 768-D teachers at
scale 100 unless told otherwise, their `param_aug` may be a JSON string, their embeddings fp32 `npz` or bf16
`pth.gz`, and synthetic embeddings may come as `<syn key>_emb` (v2) instead of extra `text_emb` rows.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import re
import tarfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mobileclip_deploy.errors import UserError

MANIFEST, PLAN, SENTENCES = "manifest.json", "plan.json", "sentences.npz"
FORMAT = "mobileclip-deploy reinforced v1"
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
# DataCompDR-12M/-1B: OpenAI ViT-L/14 first, then DataComp-XL ViT-L/14, 768-D each, teacher scale 100 each, as the
# released generation config lists them (`datacompdr12m.json`; training.md 1.1, 2.3).
DATACOMPDR_TEACHERS = (("openclip-vit-l-14-quickgelu", 768), ("openclip-vit-l-14", 768))
DEFAULT_TEACHER_SCALE = 100.0
# The released trainer's `--dataset-reinforcement-syn-text-key-regex` default: every `syn.json` key it matches
# (`re.match`) is a caption source, and each sample draws one of them.
DEFAULT_SYN_TEXT_KEY = r"^syn_text.*$"
UNIT_NORM_TOLERANCE = 2e-2  # bf16 storage keeps slice norms within ~1e-2 of 1
# What decoding a damaged json / npz / pth.gz member can raise.
DECODE_ERRORS = (ValueError, KeyError, OSError, EOFError, RuntimeError, TypeError, zipfile.BadZipFile,
                 pickle.UnpicklingError)


@dataclass(frozen=True)
class TeacherInfo:
    name: str
    dim: int
    logit_scale: float = DEFAULT_TEACHER_SCALE  # fixed teacher temperature, not the teacher's learned one
    checkpoint_sha256: str = ""
    image_size: int = 224
    context_length: int = 77


@dataclass
class Sample:
    uid: str
    image: Image.Image
    param_aug: list
    image_emb: np.ndarray  # (n_aug, sum(dims)) float32
    text_emb: np.ndarray | None  # (n_txt, sum(dims)): row 0 caption (if any), then synthetic
    captions: list[str]
    synthetic: list[str]  # the captions of every matching synthetic key, key after key
    sha256: str = ""
    synthetic_counts: list[int] = field(default_factory=list)  # captions per matching key (empty: one key)


def unit_slices(emb: np.ndarray, dims: Sequence[int]) -> np.ndarray:
    """L2-normalise each teacher's slice on its own (never the concatenation: pitfall 4)."""
    parts, start = [], 0
    for d in dims:
        part = emb[..., start:start + d]
        parts.append(part / np.maximum(np.linalg.norm(part, axis=-1, keepdims=True), 1e-12))
        start += d
    return np.concatenate(parts, axis=-1).astype(np.float32)


def encode_sample(uid: str, image_bytes: bytes, image_ext: str, param_aug: list, image_emb: np.ndarray,
                  text_emb: np.ndarray | None, captions: Sequence[str], synthetic: Sequence[str],
                  extra: dict | None = None) -> dict:
    """The webdataset members of one sample (all bytes), DataCompDR v1 layout plus the image itself."""
    if "." in uid:
        raise ValueError(f"uid {uid!r} contains a dot; webdataset would split the key there")
    arrays = {"image_emb": np.asarray(image_emb, np.float32)}
    if text_emb is not None:
        arrays["text_emb"] = np.asarray(text_emb, np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    record = {"__key__": uid, image_ext: image_bytes, "paug.json": json.dumps({"param_aug": param_aug}).encode(),
              "npz": buf.getvalue(),
              "json": json.dumps({"uid": uid, "sha256": hashlib.sha256(image_bytes).hexdigest(),
                                  **(extra or {})}).encode()}
    if captions:
        record["txt"] = captions[0].encode("utf-8")
    if synthetic:
        record["syn.json"] = json.dumps({"syn_text": list(synthetic)}).encode()
    return record


class ShardWriter:
    """Write one shard as `<name>.partial` and rename it into place on `close()`: a shard that exists is whole."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import webdataset as wds

        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.partial, "wb")
        self._tar = wds.TarWriter(self._file, encoder=False, mtime=0.0)
        self.count = 0

    def write(self, record: dict) -> None:
        self._tar.write(record)
        self.count += 1

    def close(self) -> str:
        """Finish the shard; returns its sha256."""
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        digest = _file_sha256(self.partial)
        os.replace(self.partial, self.path)
        return digest

    def abort(self) -> None:
        self._file.close()
        self.partial.unlink(missing_ok=True)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_sentence_bank(folder: Path, sentences: Sequence[str], emb: np.ndarray) -> str:
    """`sentences.npz` (`text` as a unicode array, so it loads without pickle; `emb`), written atomically."""
    from mobileclip_deploy.atomic import write_bytes

    buf = io.BytesIO()
    np.savez(buf, text=np.asarray(list(sentences), dtype=np.str_), emb=np.asarray(emb, np.float32))
    write_bytes(folder / SENTENCES, buf.getvalue(), replace=True)
    return hashlib.sha256(buf.getvalue()).hexdigest()


def _load_json(raw: bytes) -> object:
    value = json.loads(raw.decode("utf-8"))
    if isinstance(value, str):  # the HF viewer / parquet export stores param_aug as a JSON string
        value = json.loads(value)
    return value


def _load_embeddings(record: dict) -> dict[str, np.ndarray]:
    if "npz" in record:
        with np.load(io.BytesIO(record["npz"]), allow_pickle=False) as z:
            return {k: np.asarray(z[k], dtype=np.float32) for k in z.files}
    import torch

    obj = torch.load(io.BytesIO(gzip.decompress(record["pth.gz"])), map_location="cpu", weights_only=True)
    return {k: v.float().numpy() if isinstance(v, torch.Tensor) else np.asarray(v, np.float32)
            for k, v in obj.items()}


def _teacher_names_match(asked: Sequence[str], have: Sequence[str]) -> bool:
    norm = [n.lower().replace("_", "-") for n in asked], [n.lower().replace("_", "-") for n in have]
    return norm[0] == norm[1]


class ReinforcedData:
    """A reinforced dataset on disk: our `reinforce` output or DataCompDR shards, validated on open and on read."""

    def __init__(self, shards: list[Path], teachers: list[TeacherInfo], manifest: dict | None,
                 sentences: list[str] | None, sentence_emb: np.ndarray | None,
                 syn_text_key: str = DEFAULT_SYN_TEXT_KEY) -> None:
        try:
            self.syn_text_key = re.compile(syn_text_key)
        except re.error as exc:
            raise UserError(f"--syn-text-key {syn_text_key!r} is not a regular expression ({exc}).") from None
        self.shards = shards
        self.teachers = teachers
        self.manifest = manifest
        self.sentences = sentences
        self.sentence_emb = sentence_emb
        first = None if manifest is not None else next(_iter_records(shards[:1]), None)
        if manifest is not None:
            counts = manifest["counts"]
            self.num_samples = int(counts["samples"])
            self.has_captions = bool(counts["captions"])
            self.has_synthetic = bool(counts["synthetic"])
            self.context_length = int(manifest.get("context_length", 77))
        else:
            self.num_samples = sum(_count_samples(s) for s in shards)
            self.has_captions = first is not None and "txt" in first[1]
            self.has_synthetic = first is not None and "syn.json" in first[1]
            self.context_length = 77

    @property
    def dims(self) -> list[int]:
        return [t.dim for t in self.teachers]

    def samples(self, shards: Sequence[Path] | None = None) -> Iterator[Sample]:
        """Every sample in shard order, then member order (deterministic); bad members raise `UserError`."""
        for shard, record in _iter_records(list(shards) if shards is not None else self.shards):
            yield self._decode(shard, record)

    def _decode(self, shard: Path, record: dict) -> Sample:
        uid = record["__key__"]

        def bad(what: str) -> UserError:
            return UserError(f"sample {uid} in shard {shard}: {what}.")

        missing = [m for m in ("paug.json",) if m not in record]
        if "npz" not in record and "pth.gz" not in record:
            missing.append("npz")
        ext = next((e for e in IMAGE_EXTS if e in record), None)
        if ext is None:
            hint = (" DataCompDR ships image URLs only: join the shards with the DataComp-12M images first"
                    if "url.txt" in record else "")
            missing.append("jpg")
            raise bad(f"missing member(s) {', '.join(missing)}.{hint}")
        if missing:
            raise bad(f"missing member(s) {', '.join(missing)}")
        try:
            meta = _load_json(record["json"]) if "json" in record else {}
            paug = _load_json(record["paug.json"])
            param_aug = paug["param_aug"] if isinstance(paug, dict) else paug
            param_aug = json.loads(param_aug) if isinstance(param_aug, str) else param_aug
            syn = _load_json(record["syn.json"]) if "syn.json" in record else {}
            arrays = _load_embeddings(record)
        except DECODE_ERRORS as exc:
            raise bad(f"a corrupt member ({type(exc).__name__}: {exc})") from None
        image_bytes = record[ext]
        sha = str(meta.get("sha256", ""))
        if self.manifest is not None and sha and hashlib.sha256(image_bytes).hexdigest() != sha:
            raise bad(f"the {ext} member does not match its sha256 {sha[:12]}... (corrupt image)")
        try:
            image = Image.open(io.BytesIO(image_bytes))
            image.load()
            image = image.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise bad(f"the {ext} member is not a readable image ({exc})") from None
        if "image_emb" not in arrays:
            raise bad("the embeddings member has no image_emb")
        captions = [record["txt"].decode("utf-8")] if "txt" in record else []
        syn = syn if isinstance(syn, dict) else {}
        keys = [k for k in syn if self.syn_text_key.match(k)]  # syn.json's order, as the released trainer lists them
        if syn and not keys:
            raise bad(f"no synthetic-caption key matches --syn-text-key {self.syn_text_key.pattern!r} "
                      f"(syn.json has {', '.join(syn)})")
        image_emb = arrays["image_emb"]
        self._check_rows(bad, image_emb, len(param_aug), "image_emb", "param_aug entries")
        synthetic = [str(c) for k in keys for c in syn[k]]
        text_emb = self._synthetic_rows(bad, arrays, syn, keys, len(captions)) if keys else arrays.get("text_emb")
        if text_emb is not None:
            self._check_rows(bad, text_emb, len(captions) + len(synthetic), "text_emb", "captions")
        return Sample(uid, image, list(param_aug), image_emb, text_emb, captions, synthetic, sha,
                      [len(syn[k]) for k in keys])

    def _synthetic_rows(self, bad, arrays: dict[str, np.ndarray], syn: dict, keys: list[str],
                        n_captions: int) -> np.ndarray:
        """Caption rows, then the matching keys' synthetic rows: from `text_emb` when it holds more rows than
        captions (v1: every key's captions in syn.json order), else from each key's `<key>_emb` (v2)."""
        text_emb = arrays.get("text_emb")
        if text_emb is not None and len(text_emb) > n_captions:
            self._check_rows(bad, text_emb, n_captions + sum(len(v) for v in syn.values()), "text_emb", "captions")
            start = dict(zip(syn, np.cumsum([n_captions] + [len(v) for v in syn.values()])))
            rows = [r for k in keys for r in range(start[k], start[k] + len(syn[k]))]
            return np.concatenate([text_emb[:n_captions], text_emb[rows]])
        missing = [f"{k}_emb" for k in keys if f"{k}_emb" not in arrays]
        if missing:
            raise bad(f"no embeddings for its synthetic captions (neither text_emb rows nor {', '.join(missing)})")
        head = [text_emb[:n_captions]] if text_emb is not None else []
        return np.concatenate(head + [arrays[f"{k}_emb"] for k in keys])

    def _check_rows(self, bad, emb: np.ndarray, rows: int, name: str, what: str) -> None:
        total = sum(self.dims)
        if emb.ndim != 2 or emb.shape[1] != total:
            raise bad(f"{name} has shape {emb.shape}, but the teachers "
                      f"({', '.join(t.name for t in self.teachers)}) give {total}-D rows: made with other teachers?")
        if emb.shape[0] != rows:
            raise bad(f"{name} has {emb.shape[0]} rows for {rows} {what}")
        start = 0
        for t in self.teachers:
            norms = np.linalg.norm(emb[:, start:start + t.dim], axis=-1)
            if np.any(np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE):
                raise bad(f"the {t.name} slice of {name} is not unit-norm (norms {norms.min():.3f}..{norms.max():.3f})"
                          ": the teacher dimensions do not match the data")
            start += t.dim


def _iter_records(shards: Sequence[Path]) -> Iterator[tuple[Path, dict]]:
    """(shard, raw webdataset sample) in order; a broken tar becomes one `UserError` naming shard and sample."""
    import webdataset as wds

    for shard in shards:
        pipe = wds.WebDataset(str(shard), shardshuffle=False, nodesplitter=None, workersplitter=None,
                              empty_check=False)
        uid = None
        try:
            for record in pipe:
                uid = record["__key__"]
                yield shard, record
        except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
            after = f" after sample {uid}" if uid else ""
            raise UserError(f"shard {shard} is truncated or corrupt{after} ({exc.args[0] if exc.args else exc})."
                            " Re-create it (reinforce resumes and redoes only unfinished shards).") from None


def _count_samples(shard: Path) -> int:
    try:
        with tarfile.open(shard) as tar:
            return sum(1 for name in tar.getnames() if name.endswith(".paug.json"))
    except (tarfile.TarError, OSError) as exc:
        raise UserError(f"shard {shard} is not a readable tar file ({exc}).") from None


def list_shards(path: Path) -> list[Path]:
    """Finished shards under `path` (a folder, searched recursively, or one .tar), in name order."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.tar") if p.is_file())


def open_reinforced(path: str | os.PathLike[str], teachers: list[str] | None = None,
                    syn_text_key: str = DEFAULT_SYN_TEXT_KEY) -> ReinforcedData:
    """Open a reinforced dataset; `teachers` (names, in order) must match the data's, else `UserError`.

    `syn_text_key` picks the synthetic-caption keys of `syn.json` (`re.match`, the released trainer's rule).

    Without a manifest (public DataCompDR) the data is taken to hold `teachers` (default: DataCompDR's two
    ViT-L/14s) as equal slices at scale 100.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"reinforced data {path} does not exist.")
    folder = path if path.is_dir() else path.parent
    manifest_file = folder / MANIFEST
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else None
    if manifest is None and (folder / PLAN).is_file():
        raise UserError(f"{folder} is an unfinished reinforce run (no manifest.json yet): repeat the reinforce "
                        "command to finish it.")
    shards = list_shards(path)
    if not shards:
        raise UserError(f"{path} holds no finished shards (*.tar).")
    sentences = sentence_emb = None
    if manifest is not None:
        if manifest.get("format") != FORMAT:
            raise UserError(f"{manifest_file} is not a reinforced-dataset manifest "
                            f"(format {manifest.get('format')!r}).")
        infos = [TeacherInfo(**t) for t in manifest["teachers"]]
        if teachers and not _teacher_names_match(teachers, [t.name for t in infos]):
            raise UserError(f"the shards in {path} were made with teachers {', '.join(t.name for t in infos)}, "
                            f"not the ones asked for ({', '.join(teachers)}).")
        if (folder / SENTENCES).is_file():
            with np.load(folder / SENTENCES, allow_pickle=False) as z:
                sentences, sentence_emb = [str(s) for s in z["text"]], np.asarray(z["emb"], np.float32)
    else:
        names = teachers or [n for n, _ in DATACOMPDR_TEACHERS]
        first = next(_iter_records(shards[:1]), None)
        try:
            total = _load_embeddings(first[1])["image_emb"].shape[-1] if first else 0
        except DECODE_ERRORS as exc:
            raise UserError(f"sample {first[1]['__key__']} in shard {first[0]}: unreadable embeddings "
                            f"({exc}).") from None
        if total % len(names):
            raise UserError(f"{path} holds {total}-D embeddings, which do not split evenly over the "
                            f"{len(names)} teachers asked for ({', '.join(names)}).")
        infos = [TeacherInfo(n, total // len(names)) for n in names]
    return ReinforcedData(shards, infos, manifest, sentences, sentence_emb, syn_text_key)

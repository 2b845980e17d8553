"""`reinforce` end to end with tiny open_clip-layout teachers: stored views and embeddings, resume, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from helpers import refusal
from reinforced_fixtures import tiny_teacher
from typer.testing import CliRunner

from mobileclip_deploy.cli import app
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.hashing import sha256_path
from mobileclip_deploy.models.clip import CLIP
from mobileclip_deploy.registry import Variant
from mobileclip_deploy.tokenizer import tokenize
from mobileclip_deploy.training import reinforce as rf
from mobileclip_deploy.training.augment import replay_augmentation
from mobileclip_deploy.training.records import TeacherInfo, open_reinforced


def _teacher(name: str, embed: int, seed: int, size: int = 32) -> rf.Teacher:
    base = tiny_teacher(quick=seed % 2 == 0, image_size=size)
    variant = Variant(name, name, base.image, base.text, embed, size, "openclip-native", "", base.mean, base.std,
                      "bicubic")
    torch.manual_seed(seed)
    return rf.Teacher(TeacherInfo(name, embed, 100.0 - 10 * seed, f"{seed:064d}", size, 77), CLIP(variant).eval())


@pytest.fixture(scope="module")
def inputs(shared_dir: Path, module_tmp) -> dict[str, Path]:
    root = module_tmp("inputs")
    photos = root / "photos"
    (photos / "sub").mkdir(parents=True)
    src = sorted((shared_dir / "data" / "imagenet-samples").glob("*.JPEG"))[:5]
    for i, f in enumerate(src):
        shutil.copy(f, (photos / "sub" if i == 4 else photos) / f.name)
    names = [f.name for f in src]
    (root / "captions.csv").write_text("file,caption\n" + "".join(f"{n},a photo of {n.split('_')[1]}\n"
                                                                   for n in names))
    (root / "syn.jsonl").write_text("".join(json.dumps({"file": n, "captions": [f"syn {k} of {n[:9]}"
                                                                                for k in range(i % 3)]}) + "\n"
                                            for i, n in enumerate(names)))
    (root / "sentences.txt").write_text("a photo of a shark\n\na photo of a bird\nan x-ray\n")
    (root / "empty.txt").write_text("\n \n")
    (root / "empty").mkdir()
    return {"photos": photos, "captions": root / "captions.csv", "syn": root / "syn.jsonl",
            "sentences": root / "sentences.txt", "empty_sentences": root / "empty.txt", "empty": root / "empty"}


@pytest.fixture(scope="module")
def teachers() -> list[rf.Teacher]:
    return [_teacher("tiny-a", 16, 1), _teacher("tiny-b", 8, 2)]


def _cfg(inputs: dict, out: Path, **kw) -> rf.ReinforceConfig:
    return rf.ReinforceConfig(inputs["photos"], out, kw.pop("augmentations", 2), inputs["captions"], inputs["syn"],
                              inputs["sentences"], kw.pop("shard_size", 2), **kw)


@pytest.fixture(scope="module")
def dataset(inputs, teachers, module_tmp) -> Path:
    out = module_tmp("reinforced") / "data"
    rf.reinforce(_cfg(inputs, out), teachers)
    return out


def _embed(teacher: rf.Teacher, pixels: torch.Tensor | None = None, texts: list[str] | None = None) -> np.ndarray:
    with torch.no_grad():
        e = teacher.model.encode_image(pixels) if texts is None else teacher.model.encode_text(tokenize(texts, 77))
    return torch.nn.functional.normalize(e, dim=-1).numpy()


def test_records_hold_what_the_teachers_saw(dataset: Path, teachers: list[rf.Teacher], inputs) -> None:
    data = open_reinforced(dataset, ["tiny-a", "tiny-b"])
    assert [(t.name, t.dim, t.logit_scale, t.checkpoint_sha256) for t in data.teachers] == \
        [(t.info.name, t.info.dim, t.info.logit_scale, t.info.checkpoint_sha256) for t in teachers]
    assert data.num_samples == 5 and len(data.shards) == 3 and data.has_captions and data.has_synthetic
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["counts"] == {"samples": 5, "shards": 3, "captions": 5, "synthetic": 4, "sentences": 3}
    assert manifest["augmentation"]["crop_size"] == 32 and manifest["augmentation"]["per_image"] == 2
    assert set(manifest["tool_versions"]) >= {"torch", "webdataset", "mobileclip_deploy"}
    assert [s["sha256"] for s in manifest["shards"]] == [sha256_path(dataset / s["name"]) for s in manifest["shards"]]
    files = sorted(p for p in inputs["photos"].rglob("*.JPEG"))
    by_name = {p.name: p for p in files}
    for s in data.samples():
        original = next(p for n, p in by_name.items() if n.split("_")[1] in s.captions[0])
        assert s.sha256 == sha256_path(original)
        # Teacher input computed again from the stored entry (JSON round trip, image from the shard) at 32 px.
        pixels = torch.stack([replay_augmentation(s.image, p, 32) for p in s.param_aug]).float() / 255.0
        want = np.concatenate([_embed(t, pixels) for t in teachers], axis=1)
        assert np.allclose(s.image_emb, want, atol=2e-5), np.abs(s.image_emb - want).max()
        texts = s.captions + s.synthetic
        want_text = np.concatenate([_embed(t, texts=texts) for t in teachers], axis=1)
        assert s.text_emb.shape == (len(texts), 24) and np.allclose(s.text_emb, want_text, atol=2e-5)
    assert data.sentences == ["a photo of a shark", "a photo of a bird", "an x-ray"]
    want = np.concatenate([_embed(t, texts=data.sentences) for t in teachers], axis=1)
    assert np.allclose(data.sentence_emb, want, atol=2e-5)
    with pytest.raises(UserError, match=r"made with teachers tiny-a, tiny-b, not the ones asked for \(tiny-b\)"):
        open_reinforced(dataset, ["tiny-b"])


def test_resume_redoes_only_unfinished_shards(dataset: Path, inputs, teachers, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "data"
    shutil.copytree(dataset, out)
    finished = {p.name: sha256_path(p) for p in (out / "shards").glob("*.tar")}
    # Interrupt during shard 1: its .partial exists, it is not listed as done, and there is no manifest yet.
    (out / "manifest.json").unlink()
    (out / "shards" / "00000001.tar").rename(out / "shards" / "00000001.tar.partial")
    lines = (out / "done.jsonl").read_text().splitlines()
    (out / "done.jsonl").write_text("\n".join(line for line in lines if "00000001" not in line) + "\n")
    with pytest.raises(UserError, match="unfinished reinforce run"):
        open_reinforced(out)
    calls = []
    real = rf._embed_views
    monkeypatch.setattr(rf, "_embed_views", lambda *a: calls.append(1) or real(*a))
    rf.reinforce(_cfg(inputs, out), teachers)
    assert len(calls) == 2  # the two photos of shard 1, nothing else
    assert {p.name: sha256_path(p) for p in (out / "shards").glob("*.tar")} == finished  # deterministic redo
    assert not list((out / "shards").glob("*.partial"))
    rf.reinforce(_cfg(inputs, out), teachers)
    assert len(calls) == 2 and open_reinforced(out).num_samples == 5
    with pytest.raises(UserError, match="other settings .*augmentations"):
        rf.reinforce(_cfg(inputs, out, augmentations=3), teachers)


def test_bad_inputs(inputs, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    base = ["reinforce", "--images", inputs["photos"], "-o", tmp_path / "out"]
    assert "unknown model 'vit-z-99'" in refusal(*base, "--teacher", f"vit-z-99={garbage}")
    assert "is not a PyTorch checkpoint" in refusal(*base, "--teacher", f"mobileclip-s0={garbage}")
    assert "NAME=CHECKPOINT" in refusal(*base, "--teacher", "openclip-vit-b-16")
    assert "holds no photos" in refusal("reinforce", "--images", inputs["empty"], "-o", tmp_path / "o",
                                        "--teacher", f"mobileclip-s0={garbage}")
    assert "has no lines" in refusal(*base, "--sentences", inputs["empty_sentences"],
                                     "--teacher", f"mobileclip-s0={garbage}")
    missing = tmp_path / "caps.csv"
    missing.write_text("n01491361_tiger_shark.JPEG,a shark\n")
    assert "no caption for 4 photo(s)" in refusal(*base, "--captions", missing, "--teacher", f"mobileclip-s0={garbage}")
    assert "--teacher-scale is given 2" in refusal(*base, "--teacher", f"mobileclip-s0={garbage}",
                                                   "--teacher-scale", "70", "--teacher-scale", "60")
    assert not (tmp_path / "out").exists()  # nothing half-written
    occupied = tmp_path / "mine"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a reinforce output; refusing"):
        rf.reinforce(_cfg(inputs, occupied), [_teacher("tiny-a", 16, 1)])
    assert (occupied / "notes.txt").read_text() == "keep me"


def test_cli_with_a_registry_teacher(inputs, s0_checkpoint: Path, tmp_path: Path) -> None:
    """Any registry variant can teach: MobileCLIP-S0 (256 px) with golden weights, image-only + sentence bank."""
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(next(inputs["photos"].glob("*.JPEG")), one)
    result = CliRunner().invoke(app, ["reinforce", "--images", str(one), "--teacher", f"mobileclip-s0={s0_checkpoint}",
                                      "-k", "1", "--sentences", str(inputs["sentences"]), "-o", str(tmp_path / "d"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["teachers"][0]["checkpoint_sha256"] == sha256_path(s0_checkpoint)
    assert manifest["augmentation"]["crop_size"] == 256 and manifest["counts"]["captions"] == 0
    data = open_reinforced(tmp_path / "d")
    assert not data.has_captions and data.sentence_emb.shape == (3, 512)
    (sample,) = data.samples()
    assert sample.text_emb is None and sample.image_emb.shape == (1, 512)


def _rank(rank: int, port: int, inputs: dict, out: Path) -> None:
    import os

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from mobileclip_deploy.training import distributed

    try:
        rf.reinforce(_cfg(inputs, out), [_teacher("tiny-a", 16, 1), _teacher("tiny-b", 8, 2)], device="cpu")
    finally:
        distributed.cleanup()


def test_two_ranks_split_the_shards_and_match_one(dataset: Path, inputs, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "data"
    mp.spawn(_rank, args=(port, inputs, out), nprocs=2, join=True)
    one = json.loads((dataset / "manifest.json").read_text())
    two = json.loads((out / "manifest.json").read_text())
    assert two["shards"] == one["shards"] and two["counts"] == one["counts"]  # same bytes, whichever rank wrote them
    assert (out / "sentences.npz").read_bytes() == (dataset / "sentences.npz").read_bytes()


def test_images_from_webdataset_shards(inputs, tmp_path: Path) -> None:
    """--images SHARDS: img2dataset-style tars (jpg + txt); their captions become the ground truth."""
    import webdataset as wds

    files = sorted(inputs["photos"].glob("*.JPEG"))[:3]
    with wds.TarWriter(str(tmp_path / "in.tar")) as sink:
        for i, f in enumerate(files):
            sink.write({"__key__": f"{i:09d}", "jpg": f.read_bytes(), "txt": f"caption {i}"})
    out = tmp_path / "data"
    rf.reinforce(rf.ReinforceConfig(tmp_path / "in.tar", out, 1, shard_size=2), [_teacher("tiny-a", 16, 1)])
    samples = list(open_reinforced(out).samples())
    assert [s.captions for s in samples] == [["caption 0"], ["caption 1"], ["caption 2"]]
    assert [s.sha256 for s in samples] == [sha256_path(f) for f in files] and samples[0].text_emb.shape == (1, 16)


def test_teachers_of_different_sizes_share_one_view(inputs, tmp_path: Path) -> None:
    """As the released generator: one view per stored augmentation at the largest size (32 px), bicubic-resized
    (F.interpolate) for the 24-px teacher, not replayed at 24 px (which differs after pixel-level ops)."""
    import tarfile

    small, large = _teacher("tiny-small", 8, 2, size=24), _teacher("tiny-large", 16, 1)
    one = tmp_path / "one"
    one.mkdir()
    for f in sorted(inputs["photos"].glob("*.JPEG"))[:2]:
        shutil.copy(f, one)
    out = tmp_path / "data"
    manifest = rf.reinforce(rf.ReinforceConfig(one, out, 3), [small, large])
    assert manifest["augmentation"]["crop_size"] == 32
    replayed_at_24 = 0.0
    for s in open_reinforced(out).samples():
        view = torch.stack([replay_augmentation(s.image, p, 32) for p in s.param_aug]).float() / 255.0
        resized = torch.nn.functional.interpolate(view, size=(24, 24), mode="bicubic", align_corners=False)
        assert np.allclose(s.image_emb[:, :8], _embed(small, resized), atol=2e-5)
        assert np.allclose(s.image_emb[:, 8:], _embed(large, view), atol=2e-5)
        own = torch.stack([replay_augmentation(s.image, p, 24) for p in s.param_aug]).float() / 255.0
        replayed_at_24 = max(replayed_at_24, float(np.abs(s.image_emb[:, :8] - _embed(small, own)).max()))
    assert replayed_at_24 > 1e-2, replayed_at_24
    # The stored augmentations are the released writer's form: {"param_aug": [[[i, j, h, w], [[op, m], [op, m]]]]}
    with tarfile.open(out / "shards" / "00000000.tar") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".paug.json"))
        paug = json.loads(tar.extractfile(member).read())
    assert list(paug) == ["param_aug"] and len(paug["param_aug"]) == 3
    for box, ops in paug["param_aug"]:
        assert len(box) == 4 and all(isinstance(v, int) for v in box)
        assert len(ops) == 2 and all(isinstance(i, int) and isinstance(m, float) for i, m in ops)

"""Reinforced shards: the DataCompDR v1 layout reads back field by field; broken data gets one clear error."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.registry import get_variant
from mobileclip_deploy.training.records import (DATACOMPDR_TEACHERS, DEFAULT_TEACHER_SCALE, ShardWriter,
                                                encode_sample, open_reinforced)
from reinforced_fixtures import photos, write_datacompdr_v1


@pytest.fixture(scope="module")
def v1(shared_dir: Path, module_tmp) -> tuple[Path, list[str], list[Path]]:
    folder = module_tmp("datacompdr")
    files = photos(shared_dir, 6)
    return folder, write_datacompdr_v1(folder, files, n_aug=3, n_syn=2, shard_size=4), files


def test_datacompdr_v1_layout_reads(v1) -> None:
    folder, uids, files = v1
    data = open_reinforced(folder)
    assert [t.dim for t in data.teachers] == [768, 768] and [t.logit_scale for t in data.teachers] == [100.0, 100.0]
    assert data.num_samples == 6 and len(data.shards) == 2 and data.has_captions and data.has_synthetic
    assert data.context_length == 77 and data.sentences is None
    samples = list(data.samples())
    assert [s.uid for s in samples] == uids
    s = samples[1]
    assert s.image.mode == "RGB" and s.image.size == Image.open(files[1]).size
    assert len(s.param_aug) == 3 and s.image_emb.shape == (3, 1536) and s.text_emb.shape == (3, 1536)
    assert s.captions[0].startswith("a photo of a ") and len(s.synthetic) == 2
    assert np.allclose(np.linalg.norm(s.image_emb[:, :768], axis=1), 1, atol=1e-5)
    assert s.synthetic[0] == samples[2].captions[0]  # fixture: synthetic caption s of photo k is photo k+1+s's
    assert np.allclose(s.text_emb[1], samples[2].text_emb[0])
    names = open_reinforced(folder, ["a", "b", "c", "d"]).teachers
    assert [t.dim for t in names] == [384] * 4 and names[0].name == "a"


def test_datacompdr_teachers_are_the_released_config_order() -> None:
    """datacompdr12m.json: OpenAI ViT-L/14 (QuickGELU) first, then DataComp-XL ViT-L/14 (GELU), 768-D, scale 100."""
    (openai, openai_dim), (datacomp, datacomp_dim) = DATACOMPDR_TEACHERS
    assert get_variant(openai).text.quick_gelu and not get_variant(datacomp).text.quick_gelu
    assert openai_dim == datacomp_dim == get_variant(openai).embed_dim == get_variant(datacomp).embed_dim == 768
    assert DEFAULT_TEACHER_SCALE == 100.0


@pytest.mark.parametrize("form", ["released", "hf_string", "double_encoded"])
def test_every_paug_form_reads_the_same(v1, tmp_path: Path, form: str) -> None:
    """The released writer's `{"param_aug": [...]}` (the fixture's), the HF viewer's `{"param_aug": "<json>"}`,
    and a whole member encoded twice all give the same entries."""
    folder, uids, _ = v1

    def change(name: str, data: bytes) -> bytes:
        if not name.endswith(".paug.json"):
            return data
        value = json.loads(data)
        assert isinstance(value, dict) and isinstance(value["param_aug"], list)  # the fixture is the released form
        if form == "hf_string":
            return json.dumps({"param_aug": json.dumps(value["param_aug"])}).encode()
        if form == "double_encoded":
            return json.dumps(json.dumps(value)).encode()
        return data

    for shard in ("00000000.tar", "00000001.tar"):
        _rewrite(folder / shard, tmp_path / shard, change)
    want = [s.param_aug for s in open_reinforced(folder).samples()]
    assert [s.param_aug for s in open_reinforced(tmp_path).samples()] == want
    assert all(len(p) == 3 and len(p[0][0]) == 4 and len(p[0][1]) == 2 for p in want)


def _rewrite(src: Path, dst: Path, change) -> None:
    """Copy a shard member by member through `change(name, bytes) -> bytes | None` (None drops the member)."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for info in tin.getmembers():
            data = change(info.name, tin.extractfile(info).read())
            if data is not None:
                info.size = len(data)
                tout.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("case", ["corrupt_npz", "missing_paug", "no_image", "wrong_dim"])
def test_bad_members_name_the_sample(v1, tmp_path: Path, case: str) -> None:
    folder, uids, _ = v1
    victim = uids[1]

    def change(name: str, data: bytes) -> bytes | None:
        if not name.startswith(victim):
            return data
        if case == "corrupt_npz" and name.endswith(".npz"):
            return data[: len(data) // 2]
        if case == "missing_paug" and name.endswith(".paug.json"):
            return None
        if case == "no_image" and name.endswith(".jpg"):
            return None
        if case == "wrong_dim" and name.endswith(".npz"):
            buf = io.BytesIO()
            np.savez(buf, image_emb=np.ones((3, 1024), np.float32), text_emb=np.ones((3, 1024), np.float32))
            return buf.getvalue()
        return data

    _rewrite(folder / "00000000.tar", tmp_path / "00000000.tar", change)
    with pytest.raises(UserError) as err:
        list(open_reinforced(tmp_path).samples())
    message = str(err.value)
    assert victim in message and "00000000.tar" in message
    assert {"corrupt_npz": "corrupt", "missing_paug": "paug.json", "no_image": "join the shards",
            "wrong_dim": "other teachers"}[case] in message


def test_truncated_shard_and_bad_folders(v1, tmp_path: Path) -> None:
    folder, uids, _ = v1
    raw = (folder / "00000000.tar").read_bytes()
    (tmp_path / "00000000.tar").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="00000000.tar"):
        list(open_reinforced(tmp_path).samples())
    with pytest.raises(UserError, match="does not exist"):
        open_reinforced(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no finished shards"):
        open_reinforced(empty)


def test_our_manifest_checks_teachers_and_image_hash(tmp_path: Path, shared_dir: Path) -> None:
    files = photos(shared_dir, 1)
    data = files[0].read_bytes()
    emb = np.zeros((1, 8), np.float32)
    emb[:, 0] = emb[:, 4] = 1
    record = encode_sample("p0", data, "jpg", [[[0, 0, 10, 10], [[0, 0.0], [0, 0.0]]]], emb, None, [], [])
    writer = ShardWriter(tmp_path / "00000000.tar")
    writer.write(record)
    writer.close()
    manifest = {"format": "mobileclip-deploy reinforced v1", "context_length": 77,
                "teachers": [{"name": "t-one", "dim": 4}, {"name": "t-two", "dim": 4}],
                "counts": {"samples": 1, "captions": 0, "synthetic": 0}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert len(list(open_reinforced(tmp_path, ["t-one", "t-two"]).samples())) == 1
    with pytest.raises(UserError, match=r"made with teachers t-one, t-two, not the ones asked for \(t-two, t-one\)"):
        open_reinforced(tmp_path, ["t-two", "t-one"])
    record["jpg"] = data[:-10] + b"0123456789"
    writer = ShardWriter(tmp_path / "00000000.tar")
    writer.write(record)
    writer.close()
    with pytest.raises(UserError, match="p0 in shard .*sha256"):
        list(open_reinforced(tmp_path).samples())


def _two_key_shard(folder: Path, shared_dir: Path, layout: str) -> np.ndarray:
    """One sample with a gt caption and two synthetic keys (DataCompDR's `syn_text`, DFNDR's fine-tuned one),
    embeddings in the v1 (`text_emb` rows) or v2 (`<key>_emb`) layout; returns the 5 text rows in syn.json order."""
    data = photos(shared_dir, 1)[0].read_bytes()
    rng = np.random.default_rng(3)
    unit = rng.standard_normal((5, 8)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    param = [[[0, 0, 10, 10], None]]
    record = encode_sample("p0", data, "jpg", param, unit[:1], unit if layout == "v1" else unit[:1], ["gt"], [])
    syn = {"syn_text": ["coca 0", "coca 1"], "syn_text_dfn_mscoco38k": ["dfn 0", "dfn 1"]}
    record["syn.json"] = json.dumps(syn).encode()
    if layout == "v2":
        buf = io.BytesIO()
        np.savez(buf, image_emb=unit[:1], text_emb=unit[:1], syn_text_emb=unit[1:3],
                 syn_text_dfn_mscoco38k_emb=unit[3:5])
        record["npz"] = buf.getvalue()
    writer = ShardWriter(folder / "00000000.tar")
    writer.write(record)
    writer.close()
    return unit


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_syn_text_key_regex(layout: str, tmp_path: Path, shared_dir: Path) -> None:
    """`--syn-text-key` as the released trainer: every matching key (default ^syn_text.*$), one drawn per sample."""
    from mobileclip_deploy.training.batches import collate

    rows = _two_key_shard(tmp_path, shared_dir, layout)
    (both,) = open_reinforced(tmp_path, ["t"]).samples()
    assert both.synthetic == ["coca 0", "coca 1", "dfn 0", "dfn 1"] and both.synthetic_counts == [2, 2]
    assert np.array_equal(both.text_emb, rows)
    drawn = set()
    for epoch in range(40):
        batch = collate([both], [epoch], 0, 16, 77, ["synthetic"])
        drawn.add(int(np.argmax(rows @ batch.teacher_text["synthetic"][0].numpy())))
    assert drawn == {1, 2, 3, 4}  # both keys, every caption, each with its own embedding row
    (dfn,) = open_reinforced(tmp_path, ["t"], r"^syn_text_dfn").samples()
    assert dfn.synthetic == ["dfn 0", "dfn 1"] and np.array_equal(dfn.text_emb, rows[[0, 3, 4]])
    with pytest.raises(UserError, match=r"no synthetic-caption key matches --syn-text-key '\^caption' "
                                        r"\(syn.json has syn_text, syn_text_dfn_mscoco38k\)"):
        list(open_reinforced(tmp_path, ["t"], "^caption").samples())
    with pytest.raises(UserError, match="is not a regular expression"):
        open_reinforced(tmp_path, ["t"], "syn_text(")

from __future__ import annotations

import json

import pytest
import torch

from mobileclip_deploy.tokenizer import EOT, NUM_MERGES, SOT, ClipTokenizer, get_tokenizer, tokenize


@pytest.fixture(scope="module")
def golden(shared_dir):
    return json.loads((shared_dir / "reference" / "goldens" / "tokenizer_cases.json").read_text("utf-8"))


def test_golden_cases_match_reference(golden):
    cases = golden["cases"]
    assert len(cases) > 100
    ids = tokenize([c["text"] for c in cases], context_length=golden["context_length"])
    assert ids.dtype == torch.long
    assert ids.shape == (len(cases), golden["context_length"])
    mismatched = [c["text"] for c, row in zip(cases, ids.tolist()) if row != c["ids"]]
    assert not mismatched, f"{len(mismatched)} cases differ, e.g. {mismatched[:3]}"


def test_single_string_and_padding():
    ids = tokenize("a photo of a dog.")
    assert ids.shape == (1, 77)
    row = ids[0].tolist()
    n = row.index(EOT) + 1
    assert row[0] == SOT
    assert row[1:n - 1] == get_tokenizer().encode("a photo of a dog.")
    assert all(t == 0 for t in row[n:])


def test_truncation_keeps_eot_last():
    ids = tokenize("word " * 100, context_length=16)
    assert ids.shape == (1, 16)
    assert ids[0, 0] == SOT and ids[0, -1] == EOT
    assert (ids[0, 1:-1] != 0).all()


def test_shared_instance_is_reused():
    assert get_tokenizer() is get_tokenizer()


def test_write_assets_round_trip(tmp_path, golden):
    tok = get_tokenizer()
    paths = tok.write_assets(tmp_path)
    assert paths == {"merges": "merges.txt", "vocab": "vocab.json"}

    merges_lines = (tmp_path / paths["merges"]).read_text("utf-8").splitlines()
    assert len(merges_lines) == NUM_MERGES
    assert all(len(line.split(" ")) == 2 for line in merges_lines)

    vocab = json.loads((tmp_path / paths["vocab"]).read_text("utf-8"))
    assert len(vocab) == 49408
    assert vocab == tok.encoder
    assert vocab["<start_of_text>"] == SOT and vocab["<end_of_text>"] == EOT

    rebuilt = ClipTokenizer.from_merges_file(tmp_path / paths["merges"])
    assert rebuilt.encoder == vocab
    texts = [c["text"] for c in golden["cases"]]
    assert torch.equal(rebuilt(texts), tokenize(texts))

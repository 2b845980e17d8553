from __future__ import annotations

import csv
import math

import torch

from mobileclip_deploy.tokenizer import tokenize
from mobileclip_deploy.zeroshot import (
    build_prompts,
    class_text_embeddings,
    imagenet_classnames,
    openai_templates,
    simple_templates,
    zero_shot_logits,
)


def test_metadata_sizes():
    names = imagenet_classnames()
    assert len(names) == 1000
    assert len(set(names)) == 998  # CLIP's list names two class pairs alike ("missile", "sunglasses")
    templates = openai_templates()
    assert len(templates) == 80 and all("{}" in t for t in templates)
    assert len(simple_templates()) == 7


def test_classnames_agree_with_sample_labels(shared_dir):
    names = imagenet_classnames()
    with open(shared_dir / "data" / "imagenet-samples" / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows
    assert all(names[int(r["index"])] == r["openai_classname"] for r in rows)


def test_build_prompts():
    prompts = build_prompts(["dog", "{weird}"], ["a photo of a {}.", "{} art"])
    assert prompts == [["a photo of a dog.", "dog art"], ["a photo of a {weird}.", "{weird} art"]]


def _fake_encoder(dim: int = 16):
    """Deterministic per-prompt embeddings that depend only on the token ids (never unit norm)."""
    proj = torch.randn(49408, dim, generator=torch.Generator().manual_seed(0))

    def encode_text(tokens: torch.Tensor) -> torch.Tensor:
        assert tokens.dtype == torch.long and tokens.shape[1] == 77
        return proj[tokens].sum(dim=1) * 3.0

    return encode_text


def test_class_text_embeddings_normalized_and_batch_independent():
    classes, templates = ["dog", "cat", "sports car"], openai_templates()[:5]
    encode = _fake_encoder()
    emb = class_text_embeddings(encode, classes, templates, batch_size=4)
    assert emb.shape == (3, 16)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(class_text_embeddings(encode, classes, templates, batch_size=1000), emb)

    # Reference computation for one class: normalize each prompt, mean, re-normalize.
    per_prompt = torch.nn.functional.normalize(encode(tokenize(build_prompts(["cat"], templates)[0])), dim=-1)
    expected = torch.nn.functional.normalize(per_prompt.mean(0), dim=-1)
    torch.testing.assert_close(emb[1], expected)


def test_zero_shot_logits_ranks_and_scales():
    class_emb = torch.eye(4)
    image_emb = torch.tensor([[0.1, 5.0, 0.2, 0.0], [0.0, 0.0, -1.0, 2.0]])
    logits = zero_shot_logits(image_emb, class_emb, math.log(1 / 0.07))
    assert logits.argmax(dim=-1).tolist() == [1, 3]
    expected_top = (1 / 0.07) * 5.0 / image_emb[0].norm()
    torch.testing.assert_close(logits[0, 1], expected_top)

    capped = zero_shot_logits(image_emb, class_emb, torch.tensor(10.0))  # exp(10) > 100
    torch.testing.assert_close(capped[0, 1], 100.0 * 5.0 / image_emb[0].norm())

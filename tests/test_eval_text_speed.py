"""`eval`'s fast text side (issue 31, section 5): prompts batched longest first, a causal tower cut after its longest
prompt, the exported text tower on all cores. Each fast path must give the classifier the old eager path gives
(plain `encode_text`, batches of 32 in prompt order): cosine > 0.9999 per class, on synthetic weights whose prompts
embed apart (the classes' rows are far from each other, so the check can fail, and a planted defect does)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import TINY, synthetic_tiny_model
from rich.console import Console

from mobileclip_deploy.bench import evaluate as ev
from mobileclip_deploy.models.clip import CLIP
from mobileclip_deploy.models.synthetic import load_synthetic
from mobileclip_deploy.models.text import TextConfig
from mobileclip_deploy.zeroshot import class_text_embeddings, imagenet_classnames, openai_templates

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = [imagenet_classnames()[i] for i in (0, 1, 207, 409, 980)]  # tench ... volcano: short and long names
TEMPLATES = openai_templates()[:12]
TINY_CAUSAL = dataclasses.replace(TINY, name="tiny-causal", text=TextConfig(width=64, heads=2, layers=2, causal=True))


def old_eager(model: CLIP) -> torch.Tensor:
    """The path before: every prompt padded to 77 tokens, batches of 32 in prompt order."""
    plain = [p for per_class in [[t.replace("{}", c) for t in TEMPLATES] for c in CLASSES] for p in per_class]
    from mobileclip_deploy.tokenizer import tokenize

    with torch.inference_mode():
        emb = torch.cat([F.normalize(model.encode_text(tokenize(plain[i:i + 32])), dim=-1)
                         for i in range(0, len(plain), 32)])
    return F.normalize(emb.reshape(len(CLASSES), len(TEMPLATES), -1).mean(dim=1), dim=-1)


def assert_same_classifier(fast: torch.Tensor, reference: torch.Tensor) -> None:
    cos = F.cosine_similarity(fast, reference, dim=-1)
    assert cos.min() > 0.9999, cos
    others = reference @ reference.T - torch.eye(len(CLASSES))
    assert others.max() < 0.99, "the classes' rows must differ, or no wrong classifier could be told apart"


def causal_model() -> CLIP:
    model = CLIP(TINY_CAUSAL)
    load_synthetic(model)
    return model.eval()


def test_causal_tower_is_cut_after_its_longest_prompt_and_gives_the_same_classifier() -> None:
    model = causal_model()
    seen: list[int] = []
    _, text = ev.torch_encoders(model)

    def spy(tokens: torch.Tensor) -> torch.Tensor:
        out = text(tokens)
        seen.append(int(tokens.argmax(dim=-1).max()) + 1)
        return out

    fast = class_text_embeddings(spy, CLASSES, TEMPLATES, batch_size=ev.TEXT_BATCH // 16)
    assert_same_classifier(fast, old_eager(model))
    assert seen == sorted(seen, reverse=True) and max(seen) < 30  # longest first, far below 77 positions


def test_cutting_a_bidirectional_tower_would_be_caught() -> None:
    """Planted defect: MobileCLIP-S*'s text towers see their padding, so cutting them changes the embeddings; the
    check above fails on it (and torch_encoders keeps all 77 positions for them)."""
    model = synthetic_tiny_model()
    assert not model.text.cfg.causal

    def cut(tokens: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.encode_text(tokens[:, : int(tokens.argmax(dim=-1).max()) + 1])

    reference = old_eager(model)
    with pytest.raises(AssertionError):
        assert_same_classifier(class_text_embeddings(cut, CLASSES, TEMPLATES), reference)
    assert_same_classifier(class_text_embeddings(ev.torch_encoders(model)[1], CLASSES, TEMPLATES), reference)


def test_exported_text_tower_gives_the_eager_classifier(tmp_path: Path) -> None:
    """The ONNX text artifact (as `eval --artifacts` runs it: all cores, one row at a time) against eager."""
    from mobileclip_deploy.exporters import pipeline
    from mobileclip_deploy.exporters.backends import resolve_pairs

    model = synthetic_tiny_model()
    request = pipeline.ExportRequest(pairs=resolve_pairs([], ["onnx:fp32"]), output_dir=tmp_path, towers=("text",),
                                     parity=False)
    [result] = pipeline.run(request, model, TINY, None, Console(quiet=True))
    assert result.status == "ok"
    onnx = ev.artifact_encoder(tmp_path / "tiny-s0_text_onnx_fp32.onnx", "onnx")
    assert_same_classifier(class_text_embeddings(onnx, CLASSES, TEMPLATES), old_eager(model))


def test_evaluate_estimates_the_time_from_its_first_batch_and_restores_threads(tmp_path: Path) -> None:
    """`eval` says how long the prompts will take (measured, so it follows the new speed), on `threads` torch
    threads, and leaves the caller's thread count as it was."""
    from helpers import SAMPLES, wnid_folder

    model = causal_model()
    image, text = ev.torch_encoders(model)
    seen_threads: list[int] = []
    lines: list[str] = []

    def counting(tokens: torch.Tensor) -> torch.Tensor:
        seen_threads.append(torch.get_num_threads())
        return text(tokens)

    plan = ev.plan_eval(wnid_folder(tmp_path), "simple", "present", SAMPLES / "labels.csv")
    before = torch.get_num_threads()
    result = ev.evaluate(image, counting, plan, TINY.image_size, threads=2, notice=lines.append, text_batch_size=8)
    assert torch.get_num_threads() == before and set(seen_threads) == {2}
    [line] = lines
    assert "prompts/s here" in line and f"for the {plan.prompts:,} prompts" in line and result.templates == 7

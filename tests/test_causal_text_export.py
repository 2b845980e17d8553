"""A causal text tower (MobileCLIP-B, MobileCLIP2, CLIP teachers) exports to Core ML: its attention mask used to
export as `aten.alias`, which coremltools rejects (`Unsupported fx node alias`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from rich.console import Console

from mobileclip_deploy import reparameterize
from mobileclip_deploy.exporters import pipeline
from mobileclip_deploy.exporters.backends import all_backends
from mobileclip_deploy.exporters.wrappers import example_input, tower_module
from mobileclip_deploy.models.clip import CLIP
from mobileclip_deploy.models.synthetic import load_synthetic
from mobileclip_deploy.models.text import TextConfig
from mobileclip_deploy.registry import get_variant

pytestmark = pytest.mark.usefixtures("one_thread")

CAUSAL = dataclasses.replace(get_variant("mobileclip-b"), name="tiny-causal", embed_dim=16,
                             text=TextConfig(width=32, heads=2, layers=1, causal=True))


def tiny_causal() -> CLIP:
    model = CLIP(CAUSAL)
    load_synthetic(model)
    return model.eval()


def test_causal_text_tower_exports_without_alias() -> None:
    text = tower_module(reparameterize(tiny_causal()).eval(), "text", CAUSAL.image_size, CAUSAL.context_length)
    program = torch.export.export(text, (example_input("text", CAUSAL.image_size, CAUSAL.context_length),))
    assert not [n for n in program.graph.nodes if "alias" in str(n.target)]


def test_causal_text_tower_converts_to_coreml_and_passes_the_gate(tmp_path: Path) -> None:
    coreml = all_backends()["coreml"]
    request = pipeline.ExportRequest(pairs=[(coreml, coreml.scheme("fp16"))], output_dir=tmp_path / "out",
                                     towers=("text",))
    [result] = pipeline.run(request, tiny_causal(), CAUSAL, None, Console(quiet=True))
    assert result.status == "ok", result.message
    assert result.parity["passed"] is True, result.parity["message"]

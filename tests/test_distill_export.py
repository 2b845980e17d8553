"""A distilled MobileCLIP-S0 is an ordinary checkpoint: create_model loads it, it folds, exports to ONNX, and the
frontier plots it beside the published points."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from distill_fakes import make_data
from helpers import SAMPLES, expected_top1, uneven_folder
from typer.testing import CliRunner

from mobileclip_deploy import create_model, reparameterize, runtimes
from mobileclip_deploy.bench.frontier import MEASURED
from mobileclip_deploy.cli import app
from mobileclip_deploy.hashing import sha256_path
from mobileclip_deploy.training.loop import DistillConfig, distill

pytestmark = pytest.mark.usefixtures("one_thread")


def test_distilled_s0_loads_folds_and_exports(shared_dir: Path, s0_checkpoint: Path, tmp_path: Path) -> None:
    data = make_data(shared_dir / "data" / "imagenet-samples", n=4)
    cfg = DistillConfig(student="mobileclip-s0", init=str(s0_checkpoint), data="hand-made", out=str(tmp_path / "run"),
                        steps=1, batch_size=2, lr=1e-4, warmup=1)
    summary = distill(cfg, data=data)
    student_file = Path(summary["student"])
    start = create_model("mobileclip-s0", s0_checkpoint)
    trained = create_model("mobileclip-s0", student_file)  # strict load, official layout
    assert summary["variant"] == "mobileclip-s0"
    moved = [k for k, v in trained.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, start.state_dict()[k])]
    assert len(moved) > 100  # the step trained the student (and the file holds it)

    folded = reparameterize(trained)
    pixels = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(folded.encode_image(pixels), trained.encode_image(pixels), rtol=1e-3, atol=1e-4)

    # The frontier takes the run folder as it is: its own export (checked here against the folded student, as the
    # frontier skips the gate), timing and accuracy on labelled photos.
    labelled = uneven_folder(tmp_path)
    res = CliRunner().invoke(app, ["frontier", "--student", str(tmp_path / "run"), "--schemes", "onnx:fp32",
                                   "--eval-data", str(labelled), "--class-map", str(SAMPLES / "labels.csv"),
                                   "--eval-templates", "simple", "--eval-classes", "present", "--warmup", "0",
                                   "--iterations", "1", "-o", str(tmp_path / "frontier")])
    assert res.exit_code == 0, res.output
    exported = tmp_path / "frontier" / "artifacts" / "mobileclip-s0-distilled-run"
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["checkpoint_sha256"] == sha256_path(student_file) and len(manifest["artifacts"]) == 2
    [image] = [e for e in manifest["artifacts"] if e["tower"] == "image"]
    ours = runtimes.load(exported / image["file"])(pixels.numpy())
    with torch.no_grad():
        reference = folded.encode_image(pixels).numpy()
    cosine = float((ours * reference).sum() / np.linalg.norm(ours) / np.linalg.norm(reference))
    assert cosine > 0.9999 and np.abs(ours - reference).max() < 1e-3
    rows = list(csv.DictReader((tmp_path / "frontier" / "frontier.csv").open()))
    [point] = [r for r in rows if r["group"] == MEASURED]  # no variant measured unless asked for
    assert point["name"] == "MobileCLIP-S0-distilled[run] onnx fp32"
    assert point["top1_source"] == "measured" and point["random_weights"] == "False"
    # the ONNX artifacts classify the photos as the student does in PyTorch (outputs agree to 1e-3, see above)
    assert float(point["top1"]) == pytest.approx(expected_top1(folded, labelled, 256), abs=1e-4)
    assert float(point["total_ms"]) > 0
    assert any(r["group"] != MEASURED for r in rows)  # beside the published points
    notes = (tmp_path / "frontier" / "frontier.md").read_text()
    assert "MobileCLIP-S0-distilled[run]: mobileclip-s0 distilled in" in notes and "agreement" in notes

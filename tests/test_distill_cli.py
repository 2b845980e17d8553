"""`distill` on public DataCompDR-v1-layout shards, and its refusals through the command line."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import helpers
import pytest
from distill_fakes import tiny_student
from reinforced_fixtures import photos, write_datacompdr_v1

from mobileclip_deploy.training.loop import DistillConfig, distill

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def v1(shared_dir: Path, module_tmp) -> Path:
    folder = module_tmp("datacompdr")
    write_datacompdr_v1(folder, photos(shared_dir, 8))
    return folder


def refusal(*args: str | Path) -> str:
    """`mobileclip-deploy distill ...`'s refusal (one line, unwrapped)."""
    return helpers.refusal("distill", *args)


def test_trains_on_datacompdr_v1_shards(v1: Path, tmp_path: Path) -> None:
    cfg = DistillConfig(student="tiny-vit", data=str(v1), out=str(tmp_path / "run"), steps=20, batch_size=4, lr=2e-3)
    summary = distill(cfg, student=tiny_student())
    assert summary["teachers"] == ["openclip-vit-l-14-quickgelu", "openclip-vit-l-14"]
    assert summary["teacher_scales"] == [100.0, 100.0] and summary["loss"] == "mobileclip"
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 20 and all(h["distill"] > 0 for h in log)
    assert sum(h["loss"] for h in log[-5:]) < sum(h["loss"] for h in log[:5])


def test_cli_refuses_batch_larger_than_data(v1: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    message = refusal("--student", "mobileclip-s0", "--data", v1, "--steps", 1, "--batch-size", 9, "-o", out)
    assert "the batch (9 samples) is larger than the training data (8 samples" in message
    assert not out.exists()  # nothing half-written


def test_cli_refuses_other_teachers(v1: Path, tmp_path: Path) -> None:
    message = refusal("--student", "mobileclip-s0", "--data", v1, "--steps", 1, "--teacher", "a", "--teacher", "b",
                      "--teacher", "c", "-o", tmp_path / "run")
    # v1 shards carry no teacher names: three 512-D slices of two 768-D teachers are not unit-norm.
    assert "the a slice of image_emb is not unit-norm" in message
    assert "the teacher dimensions do not match the data" in message


def test_cli_names_the_corrupt_sample(v1: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    victim = None
    with tarfile.open(v1 / "00000000.tar") as src, tarfile.open(broken / "00000000.tar", "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith(".npz") and victim is None:
                victim, data = member.name.split(".", 1)[0], data[: len(data) // 2]
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    out = tmp_path / "run"
    message = refusal("--student", "mobileclip-s0", "--data", broken, "--steps", 1, "--batch-size", 2, "-o", out)
    assert f"sample {victim}" in message and "00000000.tar" in message
    assert not out.exists()


def test_cli_refuses_loss_without_its_text(v1: Path, tmp_path: Path) -> None:
    message = refusal("--student", "mobileclip-s0", "--data", v1, "--steps", 1, "--loss", "dime-fm",
                      "-o", tmp_path / "run")
    assert "--loss dime-fm needs a sentence bank" in message

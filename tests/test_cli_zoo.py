"""The model-zoo commands (`models`, `inspect`, `reparam`, `classify`) through typer's CliRunner.

The app prints a `UserError` as "error: ..." on stderr and exits with 2; in-process the error still surfaces as
`result.exception` (a `UserError`), and one test runs the real entry point in a subprocess to check the mapping.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from goldens import load_manifest, manifest_path, placeholder_state_dict
from helpers import refusal
from typer.testing import CliRunner, Result

from mobileclip_deploy import create_model
from mobileclip_deploy.cli import app
from mobileclip_deploy.cli.options import RANDOM_WARNING
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.registry import VARIANTS
from mobileclip_deploy.reparam import is_folded

pytestmark = pytest.mark.usefixtures("one_thread")

PHOTO = "n01491361_tiger_shark.JPEG"


def invoke(*args: str | Path) -> Result:
    result = CliRunner().invoke(app, [str(a) for a in args])
    if isinstance(result.exception, UserError) or (result.exception is not None
                                                   and not isinstance(result.exception, SystemExit)):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


def flat(text: str) -> str:
    """Undo rich's line wrapping (the runner's terminal is 80 columns wide)."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def published(shared_dir: Path) -> dict[str, dict[str, str]]:
    with open(shared_dir / "reference" / "frontier.csv", newline="", encoding="utf-8") as f:
        return {row["name"]: row for row in csv.DictReader(f)}


def _num(value: str) -> float | None:
    return float(value) if value.strip() else None


# ------------------------------------------------------------------------------------------------ models
def test_models_json_lists_every_variant_with_published_figures(published: dict[str, dict[str, str]]) -> None:
    rows = json.loads(invoke("models", "--json").stdout)
    assert [r["name"] for r in rows] == [v.name for v in VARIANTS]
    for row, variant in zip(rows, VARIANTS):
        ref = published[variant.frontier_name]
        assert row["resolution"] == variant.image_size == int(ref["image_res_px"])
        assert row["published"] == {
            "image_params_m": _num(ref["image_params_M"]), "text_params_m": _num(ref["text_params_M"]),
            "image_latency_ms": _num(ref["image_latency_ms"]), "text_latency_ms": _num(ref["text_latency_ms"]),
            "imagenet_top1": _num(ref["imagenet_zs_top1"]), "source": ref["source"]}
        assert row["published"]["image_latency_ms"] is not None and row["published"]["imagenet_top1"] is not None


def test_models_table(published: dict[str, dict[str, str]]) -> None:
    lines = invoke("models").stdout.splitlines()
    for variant in VARIANTS:
        ref = published[variant.frontier_name]
        row = next(line for line in lines if line.startswith(f"│ {variant.name} "))
        latency = f"{float(ref['image_latency_ms']):g} + {float(ref['text_latency_ms']):g}"
        assert f"│ {variant.image_size} │" in row and latency in row and variant.layout in row


# ------------------------------------------------------------------------------------------------ inspect
@pytest.mark.parametrize(("stem", "form", "variant", "also_fits"), [
    ("mobileclip_s0", "train_time", "mobileclip-s0", []),
    ("openclip_MobileCLIP2-S2", "reparameterized", "mobileclip2-s2", ["mobileclip-s2"]),  # same architecture
])
def test_inspect_json(tmp_path: Path, shared_dir: Path, stem: str, form: str, variant: str,
                      also_fits: list[str]) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save(placeholder_state_dict(manifest_path(shared_dir, stem), form), path)
    info = json.loads(invoke("inspect", path, "--json").stdout)
    manifest = load_manifest(shared_dir, stem)[form]
    assert info == {"file": str(path), "layout": "official" if stem.startswith("mobileclip") else "openclip",
                    "variant": variant, "match": 1.0, "folded": form == "reparameterized",
                    "tensors": manifest["num_entries"], "parameters": manifest["params_total"], "also_fits": also_fits}


def test_inspect_table(s0_checkpoint: Path) -> None:
    out = invoke("inspect", s0_checkpoint).stdout
    for expected in ("official", "mobileclip-s0", "100.0%", "53,847,681", "False"):
        assert expected in out
    assert "also fits" not in out


def test_inspect_table_names_variants_with_the_same_weights(tmp_path: Path, shared_dir: Path) -> None:
    path = tmp_path / "b.pt"
    torch.save(placeholder_state_dict(manifest_path(shared_dir, "mobileclip_b"), "train_time"), path)
    out = " ".join(invoke("inspect", path).stdout.split())
    assert "also fits" in out and "mobileclip-b-lt" in out and "--model" in out


# ------------------------------------------------------------------------------------------------ reparam
def test_reparam_writes_loadable_folded_state_dict(tmp_path: Path, shared_dir: Path, s0_checkpoint: Path) -> None:
    out = tmp_path / "s0_folded.pt"
    report = json.loads(invoke("reparam", "--model", "mobileclip-s0", "--checkpoint", s0_checkpoint, "-o", out,
                               "--images", shared_dir / "data" / "imagenet-samples", "--json").stdout)
    manifest = load_manifest(shared_dir, "mobileclip_s0")
    assert report["parameters_before"] == manifest["train_time"]["params_total"]
    assert report["parameters_after"] == manifest["reparameterized"]["params_total"]
    assert report["folded_blocks"]["MobileOneBlock"] > 0 and report["folded_blocks"]["RepMixer"] > 0
    assert report["measured_on"].startswith("4 images from")
    assert all(d["max_rel"] < 1e-5 for d in report["max_difference"].values())
    assert report["random_weights"] is False

    folded = create_model("mobileclip-s0", checkpoint=out)
    assert is_folded(folded)
    with np.load(shared_dir / "reference" / "goldens" / "mobileclip_s0.npz") as npz:
        golden = {k: npz[k] for k in npz.files}
    with torch.inference_mode():
        image = folded.encode_image(torch.from_numpy(golden["image"]))
    ref = torch.from_numpy(golden["image_features_reparameterized"])
    assert ((image - ref).abs().max() / ref.abs().max()).item() < 1e-4

    info = json.loads(invoke("inspect", out, "--json").stdout)
    assert (info["variant"], info["folded"], info["match"]) == ("mobileclip-s0", True, 1.0)


def test_reparam_table_reports_differences(tmp_path: Path, s0_checkpoint: Path) -> None:
    out = invoke("reparam", "-m", "mobileclip-s0", "-c", s0_checkpoint, "-o", tmp_path / "f.pt").stdout
    assert "folded " in out and "parameters 53,847,681 -> 53,792,065" in out
    assert "image encoder max difference" in out and "text encoder max difference" in out
    assert RANDOM_WARNING not in flat(out)
    assert (tmp_path / "f.pt").is_file()


# ------------------------------------------------------------------------------------------------ classify
def test_classify_ranks_labels(shared_dir: Path, s0_checkpoint: Path) -> None:
    labels = ["tiger shark", "castle"]  # each label is 80 prompts: keep the text work small
    image = shared_dir / "data" / "imagenet-samples" / PHOTO
    report = json.loads(invoke("classify", image, "--model", "mobileclip_s0", "--checkpoint", s0_checkpoint,
                               "--labels", ",".join(labels), "--json").stdout)
    assert (report["model"], report["random_weights"]) == ("mobileclip-s0", False)
    [result] = report["results"]
    assert result["image"] == str(image)
    probs = [p["probability"] for p in result["predictions"]]
    assert sorted(p["label"] for p in result["predictions"]) == sorted(labels)
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------------------------------------------ refusals
def test_refuses_without_checkpoint(tmp_path: Path, shared_dir: Path) -> None:
    out = tmp_path / "folded.pt"
    assert "mobileclip-s0 needs weights: pass --checkpoint PATH" in refusal("reparam", "-m", "mobileclip-s0",
                                                                            "-o", out)
    assert not out.exists()
    image = shared_dir / "data" / "imagenet-samples" / PHOTO
    assert "--random-weights" in refusal("classify", image, "-m", "mobileclip-s0", "--labels", "cat,dog")


def test_refuses_checkpoint_and_random_weights(tmp_path: Path, s0_checkpoint: Path) -> None:
    message = refusal("reparam", "-m", "mobileclip-s0", "-c", s0_checkpoint, "--random-weights", "-o",
                      tmp_path / "f.pt")
    assert message == "pass either --checkpoint or --random-weights, not both."


def test_entry_point_maps_user_error_to_exit_code_2(tmp_path: Path) -> None:
    """`main()` prints the message, not a traceback, and exits with 2."""
    proc = subprocess.run([sys.executable, "-m", "mobileclip_deploy", "reparam", "--model", "mobileclip_s0",
                           "-o", str(tmp_path / "f.pt")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "300"})
    assert proc.returncode == 2
    assert "error: mobileclip-s0 needs weights" in flat(proc.stderr) and proc.stdout == ""
    assert "Traceback" not in proc.stdout + proc.stderr


def test_unknown_model_suggests_name(tmp_path: Path) -> None:
    assert "Did you mean mobileclip-s2" in refusal("reparam", "-m", "mobileclip-s22", "--random-weights", "-o",
                                                   tmp_path / "f.pt")


# ------------------------------------------------------------------------------------------------ random weights
def test_random_weights_warn_loudly(tmp_path: Path) -> None:
    result = invoke("reparam", "-m", "mobileclip-s0", "--random-weights", "-o", tmp_path / "f.pt")
    assert f"WARNING: {RANDOM_WARNING}" in flat(result.stderr)
    assert RANDOM_WARNING in flat(result.stdout)  # repeated after the report, where it cannot scroll away


def test_random_weights_json_stays_parseable(tmp_path: Path) -> None:
    result = invoke("reparam", "-m", "mobileclip-s0", "--random-weights", "-o", tmp_path / "f.pt", "--json")
    assert json.loads(result.stdout)["random_weights"] is True
    assert f"WARNING: {RANDOM_WARNING}" in flat(result.stderr)

"""CLI mechanics: one `error:` line on stderr and exit code 2 (also with --json, which keeps stdout for JSON),
bad numbers refused by the option itself, --version and -h, strict JSON, refusals before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from goldens import make_golden_state_dict, manifest_path, placeholder_state_dict
from typer.testing import CliRunner

from mobileclip_deploy import __version__, create_model
from mobileclip_deploy.cli import app
from mobileclip_deploy.cli.app import print_json
from mobileclip_deploy.errors import UserError

PHOTO = "n01491361_tiger_shark.JPEG"


def run(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    return " ".join(text.split())


def test_version_and_short_help() -> None:
    assert run("--version").stdout.strip() == f"mobileclip-deploy {__version__}"
    short, long = run("-h"), run("--help")
    assert short.exit_code == 0 and short.stdout == long.stdout and "classify" in short.stdout
    assert "--top-k" in run("classify", "-h").stdout


@pytest.mark.parametrize("as_json", [[], ["--json"]])
def test_user_error_goes_to_stderr_with_exit_code_2(tmp_path: Path, as_json: list[str]) -> None:
    res = run("classify", tmp_path / "missing.jpg", "-m", "mobileclip-s0", "--labels", "cat", "--random-weights",
              *as_json)
    assert res.exit_code == 2 and res.stdout == ""
    assert flat(res.stderr) == f"error: image not found: {tmp_path / 'missing.jpg'}"
    assert isinstance(res.exception, UserError)  # in-process callers still see what went wrong


@pytest.mark.parametrize("args, option", [
    (["classify", "x.jpg", "-m", "mobileclip-s0", "--labels", "cat", "--top-k", "-1"], "--top-k"),
    (["classify", "x.jpg", "-m", "mobileclip-s0", "--labels", "cat", "--top-k", "0"], "--top-k"),
    (["export", "-m", "mobileclip-s0", "--random-weights", "--calibration-limit", "0"], "--calibration-limit"),
    (["eval", "--data", ".", "-m", "mobileclip-s0", "--batch-size", "0"], "--batch-size"),
    (["eval", "--data", ".", "-m", "mobileclip-s0", "--limit-per-class", "0"], "--limit-per-class"),
])
def test_bad_numbers_are_refused_by_the_option(args: list[str], option: str) -> None:
    res = run(*args)
    assert res.exit_code == 2 and res.stdout == "" and "Traceback" not in res.stderr
    assert option in res.stderr and "Invalid value" in res.stderr


def test_json_output_is_strict() -> None:
    with pytest.raises(UserError, match="NaN or infinite"):
        print_json({"results": [{"probability": float("nan")}]})


def test_frontier_refuses_checkpoint_for_an_unmeasured_variant(tmp_path: Path) -> None:
    res = run("frontier", "--variants", "mobileclip-s0", "--checkpoint", f"mobileclip-s1={tmp_path / 'x.pt'}",
              "-o", tmp_path / "f")
    assert res.exit_code == 2
    assert "--checkpoint for mobileclip-s1, which is not among the models measured (mobileclip-s0)" in flat(res.stderr)
    assert not (tmp_path / "f").exists()


def test_more_threads_than_cores_are_refused(tmp_path: Path) -> None:
    import os

    cores = os.cpu_count() or 1
    res = run("frontier", "--variants", "mobileclip-s0", "--threads", str(cores + 1), "-o", tmp_path / "f")
    assert res.exit_code == 2 and f"--threads {cores + 1}: only {cores} cores here" in flat(res.stderr)
    bench = run("bench", "--model", "mobileclip-s0", "--threads", f"1,{cores + 1}", "-o", tmp_path / "b.jsonl")
    assert bench.exit_code == 2 and f"--threads {cores + 1}: only {cores} cores here" in flat(bench.stderr)
    assert not (tmp_path / "b.jsonl").exists()


def test_wrong_variant_hint_names_the_callers_flag(tmp_path: Path, shared_dir: Path) -> None:
    path = tmp_path / "s2.pt"
    torch.save(placeholder_state_dict(manifest_path(shared_dir, "mobileclip_s2")), path)
    with pytest.raises(UserError, match=r"Use --model mobileclip-s2\."):
        create_model("mobileclip-s0", path)
    with pytest.raises(UserError, match=r"Use --checkpoint mobileclip-s2=PATH\."):
        create_model("mobileclip-s0", path, model_flag="--checkpoint {}=PATH")


def test_classify_reports_upcast_top_k_and_progress(tmp_path: Path, shared_dir: Path) -> None:
    """Half-precision weights: a note on stderr and a --json field; a too-large --top-k says it shows them all."""
    state = make_golden_state_dict(manifest_path(shared_dir, "mobileclip_s0"))
    path = tmp_path / "half.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path)
    photo = shared_dir / "data" / "imagenet-samples" / PHOTO
    res = run("classify", photo, "-m", "mobileclip-s0", "-c", path, "--labels", "shark,cat", "--top-k", "5", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["checkpoint_upcast_from"] == "float16" and len(out["results"][0]["predictions"]) == 2
    err = flat(res.stderr)
    assert "holds float16 weights; they were upcast to float32" in err
    assert "--top-k 5 but only 2 labels: showing all 2" in err

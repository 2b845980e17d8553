"""Every numeric option of every command has a range, checked while the options are read (before any work)."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
import typer
from typer.testing import CliRunner

from mobileclip_deploy.cli import app


def _options():
    root = typer.main.get_command(app)
    stack = [((), root)]
    while stack:
        path, command = stack.pop()
        if hasattr(command, "commands"):
            stack += [((*path, name), sub) for name, sub in command.commands.items()]
            continue
        for param in command.params:
            yield " ".join(path), param


def _numeric(annotation: object) -> bool:
    """int or float, also inside `X | None` and `list[X]`."""
    args = get_args(annotation)
    return annotation in (int, float) or any(_numeric(a) for a in args)


def test_every_numeric_option_has_a_range() -> None:
    numeric = [(cmd, p) for cmd, p in _options() if _numeric(p.type_descriptor.annotation)]
    assert len(numeric) > 20  # the walk reaches every command
    unbounded = [f"{cmd} {p.opts[0]}" for cmd, p in numeric
                 if p.min is None and p.max is None and not hasattr(p.type_descriptor.parameter_info.callback, "bound")]
    assert unbounded == []


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


COMMON = {"distill": ["distill", "--student", "mobileclip-s0", "--data", "nowhere", "-o", "run", "--steps", "1"],
          "reinforce": ["reinforce", "--images", "nowhere", "--teacher", "mobileclip-s0=x.pt", "-o", "out"]}


@pytest.mark.parametrize("cmd, args, option", [
    ("distill", ["--teacher-scale", "0"], "--teacher-scale"),
    ("distill", ["--teacher-scale", "-5"], "--teacher-scale"),
    ("distill", ["--lambda", "5"], "--lambda"),
    ("distill", ["--lambda", "-0.1"], "--lambda"),
    ("distill", ["--save-every", "0"], "--save-every"),
    ("distill", ["--lr", "0"], "--lr"),
    ("distill", ["--lr", "-1e-3"], "--lr"),
    ("distill", ["--lr", "nan"], "--lr"),
    ("distill", ["--holdout", "1"], "--holdout"),
    ("distill", ["--grad-clip", "0"], "--grad-clip"),
    ("distill", ["--warmup", "-1"], "--warmup"),
    ("distill", ["--seed", "-1"], "--seed"),
    ("reinforce", ["--teacher-scale", "0"], "--teacher-scale"),
    ("reinforce", ["--augmentations", "0"], "--augmentations"),
    ("reinforce", ["--shard-size", "0"], "--shard-size"),
    (None, ["bench", "--iterations", "0"], "--iterations"),
    (None, ["bench", "--iterations", "1000000"], "--iterations"),
    (None, ["frontier", "--iterations", "1000000"], "--iterations"),
    (None, ["frontier", "--max-seconds", "-1"], "--max-seconds"),
    (None, ["frontier", "--eval-limit-per-class", "0"], "--eval-limit-per-class"),
])
def test_out_of_range_values_are_refused_before_any_work(cmd: str | None, args: list[str], option: str,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = run(*(COMMON[cmd] if cmd else []), *args)
    assert res.exit_code == 2 and res.stdout == "" and "Traceback" not in res.stderr, res.output
    assert option in res.stderr and "Invalid value" in res.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was written


@pytest.mark.parametrize("device, why", [("cuda", "no CUDA GPU is visible here"), ("tpu", "is not a device"),
                                         ("mps", "training runs on cpu or cuda only")])
@pytest.mark.parametrize("cmd", ["distill", "reinforce"])
def test_unusable_devices_are_refused_by_the_option(cmd: str, device: str, why: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    monkeypatch.chdir(tmp_path)
    res = run(*COMMON[cmd], "--device", device)
    assert res.exit_code == 2 and "Traceback" not in res.stderr
    assert "--device" in res.stderr and why in " ".join(res.stderr.replace("│", " ").split())


def test_a_single_timed_run_has_no_standard_deviation(tmp_path: Path) -> None:
    """`bench --iterations 1`: one sample has no spread; the record holds null and the table a dash, not 0.00."""
    import json

    from tiny_artifacts import tiny_onnx

    artifact = tiny_onnx(tmp_path / "mobileclip-s0_image_onnx_fp32.onnx")
    res = run("bench", artifact, "--no-eager", "--threads", 1, "--warmup", 0, "--iterations", 1,
              "-o", tmp_path / "b.jsonl")
    assert res.exit_code == 0, res.output
    (record,) = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert record["latency_ms"]["stdev"] is None and record["latency_ms"]["median"] > 0
    header = next(line for line in res.stdout.splitlines() if "stdev" in line).split("┃")
    row = next(line for line in res.stdout.splitlines() if "mobileclip-s0" in line).split("│")
    column = [c.strip() for c in header].index("stdev")
    assert row[column].strip() == "–"

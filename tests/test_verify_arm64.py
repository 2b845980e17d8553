"""`verify --arch arm64`: the ONNX Runtime path really runs under qemu-user on ARM kernels and is judged.

The first test that emulates prepares the arm64 environment into the default cache (about a minute, once;
needs qemu-user-static and debootstrap, which .ci/run installs).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mobileclip_deploy.cli.app import app
from mobileclip_deploy.exporters import manifest as mf
from mobileclip_deploy.hashing import sha256_path
from mobileclip_deploy.verify import arm64, guest_runner
from mobileclip_deploy.verify.arm64_env import CPU_MODELS, Arm64Env, default_cache, host_versions, parse_cpus
from tiny_artifacts import tiny_pte, tiny_text_onnx

FILE = "tiny_text_onnx_fp32.onnx"


class TinyContext:
    """The parity context of a one-matmul text tower: its reference is computed by PyTorch, not by ONNX Runtime."""

    parity_source = "synthetic_images"

    def __init__(self) -> None:
        self.tokens = torch.randint(0, 49408, (3, 77), generator=torch.Generator().manual_seed(1)).to(torch.int32)
        self.weight = torch.randn(77, 4, generator=torch.Generator().manual_seed(0))

    def inputs(self, tower: str) -> np.ndarray:
        return self.tokens.numpy()

    def reference(self, tower: str) -> np.ndarray:
        return (self.tokens.double() @ self.weight.double()).float().numpy()


def _export(folder):
    """An export folder with one real ONNX artifact and the manifest entry the exporters would write."""
    path = tiny_text_onnx(folder / FILE)
    entry = {"file": FILE, "sha256": sha256_path(path), "size_bytes": path.stat().st_size, "tower": "text",
             "backend": "onnx", "scheme": "fp32", "status": "ok",
             "parity": {"check": "onnxruntime", "threshold": 0.99999, "inputs": "imagenet_prompts", "passed": True}}
    mf.save(folder, {"format_version": 1, "model": "mobileclip-s0", "checkpoint_sha256": "0" * 64,
                     "artifacts": [entry]})
    return folder


def _verify(folder, cpus="cortex-a76"):
    env = Arm64Env(default_cache())
    return arm64.verify(folder, TinyContext(), parse_cpus(cpus), env, samples=2)


def test_onnxruntime_artifact_passes_on_emulated_arm_and_is_recorded(tmp_path):
    rows = _verify(_export(tmp_path), "cortex-a53,cortex-a76")
    assert [(r.file, r.cpu, r.passed) for r in rows] == [(FILE, "cortex-a53", True), (FILE, "cortex-a76", True)]
    entry = mf.load(tmp_path)["artifacts"][0]
    for cpu in ("cortex-a53", "cortex-a76"):
        record = entry["arm64"][cpu]
        assert record["check"] == "arm64_onnxruntime" and record["count"] == 2
        assert record["min_cosine"] >= 0.99999 and record["max_abs_error"] < 1e-3 * np.abs(
            TinyContext().reference("text")).max()
        assert record["evidence"]["operators"] == ["Cast", "MatMul"]  # from the guest's ORT profiler
        assert "not observable" in record["evidence"]["kernel_families"]
        assert record["runtimes"] == {"onnxruntime": host_versions()["onnxruntime"]}
        assert record["qemu"].startswith("qemu-aarch64")
    assert entry["parity"]["check"] == "onnxruntime"  # the host parity is kept beside it


def test_wrong_result_on_the_arm_side_fails_verification(tmp_path, monkeypatch):
    monkeypatch.setenv(guest_runner.FAULT_ENV, "0.05")  # perturbs the guest's outputs only
    rows = _verify(_export(tmp_path))
    assert len(rows) == 1 and not rows[0].passed
    record = mf.load(tmp_path)["artifacts"][0]["arm64"]["cortex-a76"]
    assert record["passed"] is False and record["min_cosine"] < 0.99999


def test_tampered_artifact_is_refused(tmp_path):
    folder = _export(tmp_path)
    with open(folder / FILE, "ab") as fh:
        fh.write(b"\0")
    result = CliRunner().invoke(app, ["verify", str(folder), "--arch", "arm64", "-c", str(folder / FILE)])
    assert result.exit_code == 2 and "sha256 does not match the manifest" in " ".join(result.stderr.split())
    assert "arm64" not in json.loads((folder / "manifest.json").read_text())["artifacts"][0]


def test_missing_host_tools_name_the_debian_packages(tmp_path, monkeypatch):
    folder = _export(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = CliRunner().invoke(app, ["verify", str(folder)])
    message = str(result.exception)
    assert "qemu-aarch64-static" in message and "qemu-user-static" in message and "debootstrap" in message


def test_cpu_models_identify_as_their_cores():
    assert CPU_MODELS["cortex-a76"].midr == "0x00000000414fd0b1"  # A76 r4p1, as a real A76 reports it
    assert CPU_MODELS["cortex-a53"].midr == "0x00000000410fd034"
    assert "asimddp" in CPU_MODELS["cortex-a76"].features and "asimddp" not in CPU_MODELS["cortex-a53"].features
    assert "sme" not in CPU_MODELS["max-i8mm"].qemu.replace("sme=off", "")  # qemu 7.2's SME gives wrong int8


def test_unknown_cpu_model_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["verify", str(_export(tmp_path)), "--cpu", "cortex-a99"])
    assert "unknown CPU model cortex-a99" in str(result.exception)


class TinyImageContext(TinyContext):
    """Parity context of tests/tiny_artifacts.tiny_pte (pixel mean -> Linear(3, 4)), rebuilt from the same seed."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(3, 4)
        self.pixels = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(2))

    def inputs(self, tower: str) -> np.ndarray:
        return self.pixels.numpy()

    def reference(self, tower: str) -> np.ndarray:
        with torch.no_grad():
            return self.linear(self.pixels.mean(dim=(2, 3))).numpy()


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MOBILECLIP_ARM64_EXECUTORCH"),
                    reason="needs the ~4.5 GB ExecuTorch aarch64 stack (torch's CUDA wheel) and minutes of emulation; "
                           "set MOBILECLIP_ARM64_EXECUTORCH=1 (benchmarks/arm64_verify.py covers real artifacts)")
def test_executorch_artifact_on_emulated_arm_reports_xnnpack_operators(tmp_path):
    file = "tiny_image_executorch-xnnpack_fp32.pte"
    torch.manual_seed(0)
    path = tiny_pte(tmp_path / file)
    entry = {"file": file, "sha256": sha256_path(path), "tower": "image", "backend": "executorch-xnnpack",
             "scheme": "fp32", "parity": {"threshold": 0.99999, "inputs": "synthetic_images"}}
    mf.save(tmp_path, {"format_version": 1, "model": "mobileclip-s0", "checkpoint_sha256": "0" * 64,
                       "artifacts": [entry]})
    rows = arm64.verify(tmp_path, TinyImageContext(), parse_cpus("cortex-a76"), Arm64Env(default_cache()), samples=1)
    assert rows[0].passed, rows[0].record
    evidence = rows[0].record["evidence"]
    assert any(op.startswith("Fully Connected (NC, F32)") for op in evidence["operators"]), evidence

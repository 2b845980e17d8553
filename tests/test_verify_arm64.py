"""`verify --arch arm64`: the ONNX Runtime path really runs under qemu-user on ARM kernels and is judged.

The first test that emulates prepares the arm64 environment into the default cache (about a minute, once;
needs qemu-user-static and debootstrap, which .ci/run installs).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_artifacts import tiny_pte, tiny_text_onnx
from typer.testing import CliRunner

from mobileclip_deploy.cli.app import app
from mobileclip_deploy.exporters import manifest as mf
from mobileclip_deploy.exporters.pipeline import ExportRequest
from mobileclip_deploy.hashing import sha256_path
from mobileclip_deploy.verify import arm64, guest_runner
from mobileclip_deploy.verify.arm64_env import (
    CPU_MODELS,
    Arm64Env,
    default_cache,
    host_versions,
    parse_cpus,
)

FILE = "tiny_text_onnx_fp32.onnx"


class TinyContext:
    """The parity context of a one-matmul text tower: its reference is computed by PyTorch, not by ONNX Runtime."""

    parity_source = "synthetic_images"
    towers = {"image": None, "text": None}  # the judge pairs a tower with the other's reference for retrieval
    request = ExportRequest(pairs=[], output_dir=Path("."))

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


# What the guest sees: the HWCAP bits qemu gives the process, the MIDR an `mrs` instruction reads (qemu-user lets
# EL0 read it), and the identity files of the CPU's sysroot.
PROBE = """
import ctypes, json, mmap
libc = ctypes.CDLL(None)
libc.getauxval.restype = ctypes.c_ulong
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(bytes.fromhex("000038d5c0035fd6"))  # mrs x0, midr_el1; ret
mrs = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
print(json.dumps({"hwcap": libc.getauxval(16), "hwcap2": libc.getauxval(26), "mrs_midr": mrs(),
                  "cpuinfo": open("/proc/cpuinfo").read(),
                  "midr_el1": open("/sys/devices/system/cpu/cpu0/regs/identification/midr_el1").read()}))
"""
# Linux's arm64 HWCAP / HWCAP2 bit names (arch/arm64/include/uapi/asm/hwcap.h), bit 0 first.
HWCAP = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 "
         "sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2 = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 i8mm "
          "bf16 dgh rng bti mte ecv afp rpres mte3 sme").split()
# The features XNNPACK and MLAS choose kernels by (fp16 arithmetic, dot product, int8 matrix multiply, SVE, SME).
KERNEL_FEATURES = {"fphp", "asimdhp", "asimddp", "asimdfhm", "i8mm", "svei8mm", "bf16", "sve", "sve2", "sme"}


def _fields(cpuinfo: str) -> dict[str, str]:
    block = cpuinfo.split("\n\n")[0]
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in block.splitlines() if ":" in line)}


@pytest.mark.parametrize("name", list(CPU_MODELS))
def test_the_guest_sees_the_cpu_model_it_was_given(tmp_path, name):
    """Runtimes in the guest read /proc/cpuinfo, the midr_el1 file, HWCAP or MIDR itself: all four agree, so a
    kernel choice made from any of them is one the emulated core can run."""
    import subprocess

    cpu = CPU_MODELS[name]
    env = Arm64Env(default_cache())
    env.prepare([cpu], executorch=False)
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    proc = subprocess.run(env.command(cpu, [], script, []), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout)
    info = _fields(seen["cpuinfo"])
    midr = int(seen["midr_el1"], 16)
    assert (int(info["CPU implementer"], 16), int(info["CPU variant"], 16), int(info["CPU part"], 16),
            int(info["CPU revision"])) == (midr >> 24 & 0xFF, midr >> 20 & 0xF, midr >> 4 & 0xFFF, midr & 0xF)
    if cpu.qemu == cpu.name:  # qemu models this core: the identity shown is the one its MIDR register holds
        assert seen["mrs_midr"] == midr
    given = ({n for i, n in enumerate(HWCAP) if seen["hwcap"] >> i & 1}
             | {n for i, n in enumerate(HWCAP2) if seen["hwcap2"] >> i & 1})
    shown = set(info["Features"].split())
    assert shown & KERNEL_FEATURES == given & KERNEL_FEATURES, (sorted(shown - given), sorted(given - shown))


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

"""iOS / macOS target: drives the Swift `mobileclip-bench` runner (apps/ios), which writes the same records.

On a Mac the runner is built and run with SwiftPM (`--device mac`); on a connected iPhone it is
launched through `xcrun devicectl` as the bench app and its JSON lines are copied back. Anywhere
else every entry point raises a `UserError` that says what is needed.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from mobileclip_deploy.bench.records import read_records, validate
from mobileclip_deploy.errors import UserError

COMPUTE_UNITS = ("cpuOnly", "cpuAndGPU", "cpuAndNeuralEngine", "all")
BUNDLE_ID = "com.mobileclip-deploy.bench"


def missing_requirements() -> list[str]:
    """What this machine lacks for the ios target (empty: ready)."""
    missing = []
    if platform.system() != "Darwin":
        missing.append(f"a Mac (this is {platform.system()}): Core ML runs only on Apple platforms")
    if shutil.which("xcrun") is None:
        missing.append("Xcode command-line tools (xcrun), from Xcode 15 or later")
    if shutil.which("swift") is None:
        missing.append("a Swift toolchain (swift), installed with Xcode")
    return missing


def require() -> None:
    missing = missing_requirements()
    if missing:
        raise UserError("--target ios needs " + "; ".join(missing) +
                        ". Export Core ML artifacts here (`mobileclip-deploy export --format coreml`), copy the "
                        "export folder to a Mac with Xcode, and run `mobileclip-deploy bench --target ios` there.")


def find_package(explicit: Path | None = None) -> Path:
    """apps/ios: given, or next to the source tree, or under the working directory."""
    candidates = [explicit] if explicit else [Path(__file__).resolve().parents[2] / "apps/ios", Path.cwd() / "apps/ios"]
    for c in candidates:
        if c and (c / "Package.swift").is_file():
            return c
    raise UserError("cannot find the Swift package apps/ios (Package.swift); pass --ios-package PATH")


def bench_args(export_dir: Path, compute_units: str, warmup: int, iterations: int, output: Path,
               tower: str = "both") -> list[str]:
    if compute_units not in COMPUTE_UNITS:
        raise UserError(f"--compute-units must be one of {', '.join(COMPUTE_UNITS)}")
    return ["--export", str(export_dir), "--tower", tower, "--compute-units", compute_units,
            "--warmup", str(warmup), "--iterations", str(iterations), "--output", str(output)]


def _check(cmd: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise UserError(f"{' '.join(cmd[:4])} ... failed:\n{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc.stdout


def run_mac(export_dir: Path, compute_units: str, warmup: int, iterations: int,
            package: Path | None = None) -> list[dict[str, Any]]:
    """Build and run mobileclip-bench on this Mac; returns the validated records it wrote."""
    require()
    pkg = find_package(package)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ios.jsonl"
        _check(["swift", "run", "-c", "release", "--package-path", str(pkg), "mobileclip-bench",
                *bench_args(export_dir.resolve(), compute_units, warmup, iterations, out)])
        return _validated(out)


def run_iphone(device: str, export_dir: Path, compute_units: str, warmup: int, iterations: int,
               bundle_id: str = BUNDLE_ID) -> list[dict[str, Any]]:
    """Copy the export into the bench app's container, launch it with devicectl, copy the records back."""
    require()
    listing = _check(["xcrun", "devicectl", "list", "devices"])
    if device not in listing:
        raise UserError(f"no iPhone {device} in `xcrun devicectl list devices`; connect and trust it, "
                        f"and install the bench app ({bundle_id}) from apps/ios with Xcode")
    common = ["--device", device, "--domain-type", "appDataContainer", "--domain-identifier", bundle_id]
    remote_export = f"Documents/{export_dir.name}"
    _check(["xcrun", "devicectl", "device", "copy", "to", *common, "--source", str(export_dir),
            "--destination", remote_export])
    _check(["xcrun", "devicectl", "device", "process", "launch", "--device", device, "--terminate-existing",
            "--console", bundle_id, "--",
            *bench_args(Path(remote_export), compute_units, warmup, iterations, Path("Documents/bench.jsonl"))])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.jsonl"
        _check(["xcrun", "devicectl", "device", "copy", "from", *common, "--source", "Documents/bench.jsonl",
                "--destination", str(out)])
        return _validated(out)


def _validated(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise UserError("mobileclip-bench finished but wrote no records")
    records = read_records(path)
    for rec in records:
        problems = validate(rec)
        if problems:
            raise UserError("mobileclip-bench wrote a record that does not match the schema: " + "; ".join(problems))
    return records

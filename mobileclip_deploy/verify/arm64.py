"""`verify --arch arm64`: run an export's Android artifacts on ARM kernels under qemu-user and judge their parity.

XNNPACK and ONNX Runtime pick other kernels on a phone than on x86 (plain NEON, int8 dot product, i8mm,
KleidiAI), so the host parity does not prove the ARM result. Each artifact runs on each chosen CPU model's
emulated kernels with the export's parity inputs, and is judged by `context.judge`, the rule the host parity uses.
Which artifacts run, and on which guest runtime, each backend says (`Backend.arm64_guest`).
Emulated seconds are recorded only as the check's cost: they say nothing about a phone's latency.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mobileclip_deploy.atomic import locked_folder
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters import manifest as mf
from mobileclip_deploy.exporters.backends import all_backends, of_artifact
from mobileclip_deploy.exporters.context import inputs_sha256, judge
from mobileclip_deploy.exporters.schemes import parse_thresholds
from mobileclip_deploy.exporters.wrappers import INPUT_NAME, OUTPUT_NAME
from mobileclip_deploy.hashing import sha256_path
from mobileclip_deploy.verify import guest_runner
from mobileclip_deploy.verify.arm64_env import Arm64Env, CpuModel

GROUPS = {"onnxruntime": ["onnxruntime"], "executorch": ["onnxruntime", "executorch"],
          "litert": ["litert"]}  # guest site folders per runtime


@dataclass
class Row:
    file: str
    cpu: str
    passed: bool
    record: dict[str, Any] = field(default_factory=dict)


def _guest(entry: dict[str, Any]) -> str | None:
    """The guest runtime that runs this manifest entry's artifact on emulated ARM64, or None."""
    return of_artifact(entry.get("backend", "")).arm64_guest if entry.get("backend") else None


def _waiting(console: Console | None, what: str, folder: Path):
    return lambda: console.print(f"waiting for another run that is using {what} ({folder})") if console else None


def select(out_dir: Path, manifest: dict[str, Any], backends: list[str] | None = None) -> list[dict[str, Any]]:
    """The export's entries an ARM64 guest runs (of `backends`, if given); refuses any whose file no longer matches
    its sha256."""
    entries = [e for e in manifest["artifacts"] if _guest(e)]
    if backends:
        wanted = {of_artifact(b).name for b in backends}
        entries = [e for e in entries if of_artifact(e["backend"]).name in wanted]
    if not entries:
        names = " or ".join(backends or [b.name for b in all_backends().values() if b.arm64_guest])
        raise UserError(f"{out_dir} has no {names} artifacts to verify on arm64")
    for entry in entries:
        path = out_dir / entry["file"]
        if not path.is_file():
            raise UserError(f"{path} is listed in the manifest but missing; re-export it")
        if sha256_path(path) != entry["sha256"]:
            raise UserError(f"refusing {entry['file']}: its sha256 does not match the manifest (the file changed "
                            "after it was exported and checked); re-export it")
    return entries


def qemu_version() -> str:
    proc = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True)
    return proc.stdout.splitlines()[0] if proc.stdout else "unknown"


def etdump_operators(path: Path) -> list[str]:
    """Operator names of an ETDump (XNNPACK reports its kernels, e.g. `Fully Connected (NC, QP8, F32, QC8W)`)."""
    from executorch.devtools import Inspector

    inspector = Inspector(etdump_path=str(path))
    return sorted({re.sub(r" #\d+$", "", e.name) for block in inspector.event_blocks for e in block.events
                   if e.name and not e.name.startswith(("Method::", "Program::", "DELEGATE_CALL", "OPERATOR_CALL"))})


def kernel_families(operators: list[str]) -> list[str]:
    """The datatype tags XNNPACK puts in its operator names (QP8: KleidiAI packed int8; QD8/QDU8: dynamic int8)."""
    return sorted({name[name.index("(") + 1: name.rindex(")")] for name in operators if "(" in name and ")" in name})


def _evidence(result: dict[str, Any]) -> dict[str, Any]:
    evidence = dict(result.get("evidence") or {})
    etdump = evidence.pop("etdump", None)
    if etdump:
        try:
            operators = etdump_operators(Path(etdump))
            evidence.update(operators=operators, kernel_families=kernel_families(operators))
        except Exception as exc:  # noqa: BLE001 - the parity verdict stands without the evidence
            evidence["kernel_families"] = f"not read: {type(exc).__name__}: {exc}"
    return evidence


def verify(out_dir: Path, ctx, cpus: list[CpuModel], env: Arm64Env, samples: int = 2,
           console: Console | None = None, backends: list[str] | None = None) -> list[Row]:
    """Run every selected artifact on every CPU model, judge it, record it in the manifest; returns the rows."""
    console = console or Console(quiet=True)
    manifest = mf.load(out_dir)
    if manifest is None:
        raise UserError(f"{out_dir} has no {mf.FILENAME}: export into it first")
    entries = select(out_dir, manifest, backends)
    for entry in entries:
        recorded = (entry.get("parity") or {}).get("inputs_sha256")
        if recorded and recorded != inputs_sha256(ctx.inputs(entry["tower"])):
            raise UserError(f"the parity inputs rebuilt for {entry['file']} differ from the ones its export used; "
                            "pass the same --calibration folder and --calibration-limit as the export")
    runtimes = {_guest(e) for e in entries}
    env.cache.mkdir(parents=True, exist_ok=True)
    with locked_folder(env.cache, _waiting(console, "the arm64 environment", env.cache)):
        versions = env.prepare(cpus, executorch="executorch" in runtimes, litert="litert" in runtimes)
    thresholds = parse_thresholds(None)
    facts = {"qemu": qemu_version(), "runtimes": {k: versions["ai-edge-litert" if k == "litert" else k]
                                                  for k in sorted(runtimes)}}
    rows: list[Row] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with tempfile.TemporaryDirectory(prefix="mobileclip-arm64-") as tmp, Progress(*columns, console=console) as bar:
        work = Path(tmp)
        inputs = {}
        for tower in {e["tower"] for e in entries}:
            inputs[tower] = work / f"{tower}.npy"
            np.save(inputs[tower], ctx.inputs(tower)[:samples])
        task = bar.add_task("arm64 emulation", total=len(entries) * len(cpus))
        for cpu in cpus:
            bar.update(task, description=f"arm64 {cpu.name}: emulating")
            results = _run_guest(env, cpu, out_dir, entries, inputs, work / cpu.name, runtimes,
                                 lambda done, base=bar.tasks[task].completed: bar.update(task, completed=base + done))
            for entry in entries:
                result = results.get(entry["file"]) or {"ok": False, "error": "the guest gave no result"}
                scheme = of_artifact(entry["backend"]).scheme(entry["scheme"])
                threshold = (entry.get("parity") or {}).get("threshold") or thresholds[scheme.threshold_class]
                record: dict[str, Any] = {"cpu": cpu.name, "qemu_cpu": cpu.qemu, **facts}
                if result["ok"]:
                    out = np.load(work / cpu.name / f"{entry['file']}.out.npy")
                    record.update(judge(ctx, entry["tower"], scheme, f"arm64_{_guest(entry)}", out,
                                        threshold))
                    record["evidence"] = _evidence(result)
                    if record["evidence"].get("reduced_precision_metadata"):  # XNNPACK's fp16 path needs fp16 ALUs
                        record["evidence"]["fp16_arithmetic"] = "asimdhp" in cpu.features.split()
                else:
                    record.update(passed=False, error=result["error"])
                record["check_cost_emulated_s"] = round(result.get("emulated_load_s", 0)
                                                        + result.get("emulated_run_s", 0), 1)
                rows.append(Row(entry["file"], cpu.name, bool(record["passed"]), record))
            bar.update(task, completed=len(rows))
            record_results(out_dir, entries, rows[-len(entries):])  # each CPU model's results as soon as they exist
    return rows


def _run_guest(env: Arm64Env, cpu: CpuModel, out_dir: Path, entries: list[dict[str, Any]], inputs: dict[str, Path], work: Path,
               runtimes: set[str], progress) -> dict[str, dict[str, Any]]:
    """One qemu process per CPU model runs every artifact (the runtime import is paid once)."""
    work.mkdir(parents=True)
    jobs = []
    for entry in entries:
        jobs.append({
            "file": entry["file"], "artifact": str((out_dir / entry["file"]).resolve()), "runtime": _guest(entry),
            "input": str(inputs[entry["tower"]]), "input_name": INPUT_NAME[entry["tower"]],
            "output_name": OUTPUT_NAME[entry["tower"]], "output": str(work / f"{entry['file']}.out.npy")})
    job, result = work / "job.json", work / "result.json"
    job.write_text(json.dumps({"artifacts": jobs, "profile_dir": str(work)}))
    groups = list(dict.fromkeys(g for r in sorted(runtimes) for g in GROUPS[r]))
    cmd = env.command(cpu, groups, Path(guest_runner.__file__), [str(job), str(result)])
    fault = os.environ.get(guest_runner.FAULT_ENV)
    if fault:
        cmd[1:1] = ["-E", f"{guest_runner.FAULT_ENV}={fault}"]
    with open(work / "guest.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work)
        while proc.poll() is None:
            time.sleep(1)
            progress(len(_read(result)))
    found = {r["file"]: r for r in _read(result)}
    if proc.returncode != 0 and len(found) < len(entries):
        tail = (work / "guest.log").read_text(errors="replace")[-800:]
        missing = next(e["file"] for e in entries if e["file"] not in found)
        found[missing] = {"ok": False, "error": f"the guest exited with {proc.returncode} on it: {tail.strip()}"}
    return found


def _read(result: Path) -> list[dict[str, Any]]:
    try:
        return json.loads(result.read_text())["results"]
    except (OSError, json.JSONDecodeError, KeyError):
        return []


def record_results(out_dir: Path, entries: list[dict[str, Any]], rows: list[Row]) -> None:
    """Write each row beside its artifact's host parity (`arm64.<cpu>`), under the export folder's lock."""
    sha = {e["file"]: e["sha256"] for e in entries}
    with locked_folder(out_dir):
        manifest = mf.load(out_dir)
        for entry in manifest["artifacts"]:
            for row in rows:
                if row.file == entry["file"] and entry.get("sha256") == sha[row.file]:
                    entry.setdefault("arm64", {})[row.cpu] = row.record
        mf.save(out_dir, manifest)


WIDE = 120  # below this many terminal columns the table drops the columns `--json` still carries


def table(rows: list[Row], title: str, width: int = WIDE):
    """The rich table both `verify` and `export --verify arm64` print; emulated seconds appear only as cost.

    Cells wrap instead of being cut; a narrow terminal gets artifact, CPU, cosine and result only."""
    from rich.table import Table

    columns = ["artifact", "cpu", "min cosine", "threshold", "max abs err", "kernels", "check cost", "result"]
    shown = columns if width >= WIDE else ["artifact", "cpu", "min cosine", "result"]
    out = Table(title=title)
    for column in shown:
        out.add_column(column, overflow="fold")
    for row in rows:
        r = row.record
        kernels = (r.get("evidence") or {}).get("kernel_families", "-")
        kernels = "; ".join(kernels) if isinstance(kernels, list) else "not observable" if "observable" in str(
            kernels) else str(kernels)
        result = "[green]ok[/]" if row.passed else f"[red]FAILED[/] {r.get('error', '')[:80]}"
        cells = dict(zip(columns, (row.file, row.cpu, f"{r['min_cosine']:.6f}" if "min_cosine" in r else "-",
                                   str(r.get("threshold", "-")),
                                   f"{r['max_abs_error']:.3g}" if "max_abs_error" in r else "-", kernels,
                                   f"{r['check_cost_emulated_s']} s emulated", result)))
        out.add_row(*(cells[c] for c in shown))
    return out

"""Android target over adb: probe the device, push artifact and runner, pin to the big cores, parse the runner.

All adb traffic goes through `AdbTransport` (three calls: list devices, shell, push), so tests can
drive the whole flow with a stand-in `adb` executable and real phones need nothing but the Debian
`adb` package and a runner binary built for the device.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mobileclip_deploy.bench.artifacts import Artifact
from mobileclip_deploy.bench.parsers import (
    ExecutorRunnerRun,
    RunnerOutputError,
    parse_benchmark_model,
    parse_executor_runner,
    parse_onnxruntime_perf_test,
)
from mobileclip_deploy.bench.records import Measurement
from mobileclip_deploy.errors import UserError

REMOTE_DIR = "/data/local/tmp/mobileclip-deploy"
_PROPS = {
    "model": "ro.product.model",
    "manufacturer": "ro.product.manufacturer",
    "soc_model": "ro.soc.model",
    "soc_manufacturer": "ro.soc.manufacturer",
    "board_platform": "ro.board.platform",
    "android_version": "ro.build.version.release",
    "sdk": "ro.build.version.sdk",
    "abi": "ro.product.cpu.abi",
}
_FREQ_CMD = (
    "for d in /sys/devices/system/cpu/cpu[0-9]*; do "
    'echo "${d##*/} $(cat $d/cpufreq/cpuinfo_max_freq 2>/dev/null) $(cat $d/cpufreq/scaling_cur_freq 2>/dev/null)"; '
    "done"
)
_THERMAL_CMD = (
    "for z in /sys/class/thermal/thermal_zone*; do "
    'echo "$(cat $z/type 2>/dev/null) $(cat $z/temp 2>/dev/null)"; done'
)


class AdbTransport(Protocol):
    """The whole adb conversation the Android target needs."""

    serial: str

    def shell(self, command: str, timeout: float | None = None) -> str: ...

    def push(self, local: Path, remote: str) -> None: ...


class SubprocessAdb:
    """`AdbTransport` over the `adb` executable (the Debian `adb` package, or any adb on PATH)."""

    def __init__(self, serial: str, adb: str = "adb") -> None:
        self.serial = serial
        self.adb = adb

    def _run(self, args: list[str], timeout: float | None) -> str:
        proc = _adb([self.adb, "-s", self.serial, *args], timeout)
        if proc.returncode != 0:
            raise UserError(f"adb {' '.join(args[:2])} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
        return proc.stdout

    def shell(self, command: str, timeout: float | None = None) -> str:
        return self._run(["shell", command], timeout)

    def push(self, local: Path, remote: str) -> None:
        self._run(["push", str(local), remote], timeout=600)


ADB_LIST_TIMEOUT_S = 20.0


def _adb(command: list[str], timeout: float | None) -> subprocess.CompletedProcess:
    """One adb call; a hung adb (a stuck server, a device mid-reboot) is one clear error, not a traceback."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"'{' '.join(command[:4])}' did not answer within {timeout:g} s: the adb server or the "
                        "device hangs; try `adb kill-server`, replug the phone, and run again") from None
    except OSError as exc:
        raise UserError(f"cannot run {command[0]}: {exc.strerror or exc}") from None


def list_devices(adb: str = "adb") -> list[tuple[str, str]]:
    """(serial, state) pairs from `adb devices`."""
    if shutil.which(adb) is None:
        raise UserError(
            f"'{adb}' not found. Install the Debian/Ubuntu package: sudo apt-get install adb "
            "(no Android SDK needed), or pass --adb PATH."
        )
    proc = _adb([adb, "devices"], ADB_LIST_TIMEOUT_S)
    if proc.returncode != 0:
        raise UserError(f"'adb devices' failed: {proc.stderr.strip()}")
    out = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith("List of devices") and not line.startswith("*"):
            out.append((parts[0], parts[1]))
    return out


def connect(serial: str | None, adb: str = "adb") -> SubprocessAdb:
    """Pick the device to use, failing with a message that says what to do."""
    devices = list_devices(adb)
    ready = [s for s, state in devices if state == "device"]
    if serial:
        state = dict(devices).get(serial)
        if state is None:
            listed = ", ".join(f"{s} ({st})" for s, st in devices) or "none"
            raise UserError(f"no Android device with serial {serial} attached (adb devices lists: {listed})")
        if state != "device":
            raise UserError(f"device {serial} is '{state}': unlock it and accept the USB-debugging prompt")
        return SubprocessAdb(serial, adb)
    waiting = [(s, state) for s, state in devices if state != "device"]
    if not ready and waiting:
        listed = ", ".join(f"{s} ({state})" for s, state in waiting)
        raise UserError(f"no usable Android device: {listed}. An 'unauthorized' phone waits for you to accept the "
                        "USB-debugging prompt on its screen; 'offline' ones need replugging")
    if not ready:
        raise UserError(
            "no Android device attached: connect a phone with USB debugging enabled "
            "(Settings > Developer options) and check that 'adb devices' lists it"
        )
    if len(ready) > 1:
        raise UserError(f"several devices attached ({', '.join(ready)}): choose one with --serial")
    return SubprocessAdb(ready[0], adb)


@dataclass
class DeviceInfo:
    props: dict[str, str]
    max_freq_khz: dict[int, int]
    cur_freq_khz: dict[int, int]
    thermal_c: dict[str, float]

    @property
    def big_cores(self) -> list[int]:
        return big_cores(self.max_freq_khz)

    def record_device(self) -> dict[str, Any]:
        """The record's `device` object with the extra context the issue asks for."""
        p = self.props
        soc = p.get("soc_model") or p.get("board_platform")
        if soc and p.get("soc_manufacturer"):
            soc = f"{p['soc_manufacturer']} {soc}"
        return {
            "model": p.get("model"),
            "os": f"Android {p['android_version']}" + (f" (API {p['sdk']})" if p.get("sdk") else "")
            if p.get("android_version") else None,
            "soc": soc,
            "name": f"{p.get('manufacturer', '')} {p.get('model', '')}".strip() or None,
            "abi": p.get("abi"),
            "cpu_max_freq_khz": {str(k): v for k, v in sorted(self.max_freq_khz.items())},
            "big_cores": self.big_cores,
        }


def parse_getprop(text: str) -> dict[str, str]:
    """`getprop` dump lines look like `[ro.product.model]: [Pixel 8]`."""
    return dict(re.findall(r"^\[([^\]]+)\]:\s*\[(.*)\]\s*$", text, re.M))


def parse_freqs(text: str) -> tuple[dict[int, int], dict[int, int]]:
    max_f: dict[int, int] = {}
    cur_f: dict[int, int] = {}
    for m in re.finditer(r"^cpu(\d+)\s+(\d+)?\s*(\d+)?\s*$", text, re.M):
        cpu = int(m.group(1))
        if m.group(2):
            max_f[cpu] = int(m.group(2))
        if m.group(3):
            cur_f[cpu] = int(m.group(3))
    return max_f, cur_f


def parse_thermal(text: str) -> dict[str, float]:
    """Zone type -> degrees C (sysfs gives millidegrees; a few old kernels give degrees)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.rsplit(" ", 1)
        if len(parts) == 2 and re.fullmatch(r"-?\d+", parts[1]) and parts[0]:
            value = int(parts[1])
            out[parts[0]] = value / 1000.0 if abs(value) > 200 else float(value)
    return out


def big_cores(max_freq_khz: dict[int, int]) -> list[int]:
    """Every core outside the slowest cluster; all cores when the CPU has a single cluster."""
    if not max_freq_khz:
        return []
    slowest = min(max_freq_khz.values())
    big = [c for c, f in sorted(max_freq_khz.items()) if f > slowest]
    return big or sorted(max_freq_khz)


def cpu_mask(cores: list[int]) -> str:
    """Hex affinity mask for `taskset`."""
    return format(sum(1 << c for c in cores), "x")


def probe(t: AdbTransport) -> DeviceInfo:
    props_all = parse_getprop(t.shell("getprop"))
    props = {k: props_all[v] for k, v in _PROPS.items() if props_all.get(v)}
    max_f, cur_f = parse_freqs(t.shell(_FREQ_CMD))
    return DeviceInfo(props, max_f, cur_f, read_thermal(t))


def read_thermal(t: AdbTransport) -> dict[str, float]:
    return parse_thermal(t.shell(_THERMAL_CMD))


def runner_kind(runner: Path) -> str:
    if not runner.is_file():
        raise UserError(f"--runner {runner} does not exist (or is not a file): give the path of executor_runner or "
                        "onnxruntime_perf_test built for the device (see benchmarks/android/README.md)")
    name = runner.name.lower()
    if "perf_test" in name:
        return "onnxruntime"
    if "executor_runner" in name:
        return "executorch"
    if "benchmark_model" in name:
        return "litert"
    raise UserError(
        f"--runner {runner.name}: expected ExecuTorch's executor_runner (or xnn_executor_runner) or ONNX Runtime's "
        "onnxruntime_perf_test, built for the device (LiteRT's benchmark_model: --benchmark-binary)"
    )


def runner_command(kind: str, runner_name: str, artifact_name: str, threads: int, runs: int, mask: str,
                   warmup: int = 0) -> str:
    """The shell line run on the device (stderr merged: ET_LOG writes there).

    `runs` is executor_runner's `--num_executions` or onnxruntime_perf_test's `-r` (timed runs after its
    own first inference); `-I` makes perf_test generate inputs, `-s` print its percentiles.
    """
    q = shlex.quote
    if kind == "executorch":
        run = f"./{q(runner_name)} --model_path {q(artifact_name)} --num_executions {runs} --cpu_threads {threads}"
    elif kind == "litert":  # XNNPACK as apps get it; exact run counts (no minimum seconds)
        run = (f"./{q(runner_name)} --graph={q(artifact_name)} --num_threads={threads} --use_xnnpack=true "
               f"--num_runs={runs} --min_secs=0 --warmup_runs={warmup} --warmup_min_secs=0 "
               "--report_peak_memory_footprint=true")
    else:
        run = f"./{q(runner_name)} -e cpu -m times -r {runs} -x {threads} -y 1 -s -I {q(artifact_name)}"
    return f"cd {REMOTE_DIR} && LD_LIBRARY_PATH={REMOTE_DIR} taskset {mask} {run} 2>&1"


def executor_runner_measurement(first: ExecutorRunnerRun, warm: ExecutorRunnerRun, timed: ExecutorRunnerRun,
                                iterations: int) -> Measurement:
    """Warm latency from three executor_runner runs, since it prints only a total per run.

    `first` ran 1 execution (the first inference), `warm` 1 + warm-up, `timed` 1 + warm-up + `iterations`:
    the timed iterations' mean is (timed - warm) / iterations. Each run is its own process, so the
    difference also carries run-to-run noise; more iterations shrink it.
    """
    if first.executions != 1 or timed.executions - warm.executions != iterations:
        raise RunnerOutputError(f"executor_runner ran {first.executions}/{warm.executions}/{timed.executions} "
                                f"executions, expected 1/{warm.executions}/{warm.executions + iterations}")
    mean = (timed.total_ms - warm.total_ms) / iterations
    if mean <= 0:
        raise RunnerOutputError(f"run-to-run noise exceeds the timed iterations ({timed.total_ms:.2f} ms for "
                                f"{timed.executions} vs {warm.total_ms:.2f} ms for {warm.executions}); "
                                "use more --iterations")
    summary = {"mean": mean}
    runs = [{"executions": r.executions, "total_ms": r.total_ms, "load_ms": r.load_ms} for r in (first, warm, timed)]
    extra = {"iterations": iterations, "runner_runs": runs,
             "runner_note": "executor_runner prints only a total per run: mean = (total of 1 + warm-up + "
                            "iterations executions - total of 1 + warm-up) / iterations; no percentiles"}
    return Measurement([], first.load_ms, first.total_ms, warm.executions - 1, summary_ms=summary, extra=extra)


def run_on_device(t: AdbTransport, artifact: Artifact, runner: Path, thread_counts: list[int], warmup: int,
                  iterations: int, info: DeviceInfo,
                  kind: str | None = None) -> list[tuple[Measurement, dict[str, Any], int]]:
    """Push one artifact (and the runner), time it pinned to the big cores at each thread count, remove it.

    `kind` names the runner's runtime when its file name does not (a --benchmark-binary under another name).
    Returns (measurement, extra record keys, threads) per thread count.
    """
    kind = kind or runner_kind(runner)
    if artifact.runtime != kind:
        raise UserError(f"{artifact.path.name} is a {artifact.backend} artifact; {runner.name} runs {kind} files")
    if artifact.path.is_dir():
        raise UserError(f"{artifact.path.name} is a folder; Android runners take a single file")
    if not runner.is_file():
        raise UserError(f"--runner {runner} does not exist")
    mask = cpu_mask(info.big_cores or [0])
    t.shell(f"mkdir -p {REMOTE_DIR}")
    t.push(runner, f"{REMOTE_DIR}/{runner.name}")
    t.shell(f"chmod 755 {REMOTE_DIR}/{shlex.quote(runner.name)}")
    t.push(artifact.path, f"{REMOTE_DIR}/{artifact.path.name}")
    results = []
    try:
        for threads in thread_counts:
            _, cur_before = parse_freqs(t.shell(_FREQ_CMD))
            before = read_thermal(t)

            def run(count: int, threads: int = threads) -> str:
                return t.shell(runner_command(kind, runner.name, artifact.path.name, threads, count, mask,
                                              warmup), timeout=3600)

            if kind == "executorch":
                first = parse_executor_runner(run(1))
                warm = parse_executor_runner(run(1 + warmup)) if warmup else first
                m = executor_runner_measurement(first, warm, parse_executor_runner(run(1 + warmup + iterations)),
                                                iterations)
            elif kind == "litert":
                m = parse_benchmark_model(run(iterations))
            else:
                m = parse_onnxruntime_perf_test(run(iterations))
            _, cur_after = parse_freqs(t.shell(_FREQ_CMD))
            extra = {
                "cpu_mask": mask,
                "runner": runner.name,
                "cpu_cur_freq_khz_before": {str(k): v for k, v in sorted(cur_before.items())},
                "cpu_cur_freq_khz_after": {str(k): v for k, v in sorted(cur_after.items())},
                "thermal_c_before": before,
                "thermal_c_after": read_thermal(t),
            }
            results.append((m, extra, threads))
    finally:
        t.shell(f"rm -f {REMOTE_DIR}/{shlex.quote(artifact.path.name)}")
    return results

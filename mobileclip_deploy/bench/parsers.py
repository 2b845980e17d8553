"""Parsers for the timing output of the on-device runners, in the formats those tools print.

* ExecuTorch `executor_runner` (examples/portable/executor_runner, also `xnn_executor_runner`) logs
  through ET_LOG, `I 00:00:01.234567 executorch:executor_runner.cpp:NNN] <message>` (time since the
  runtime started). Its only timing is the total over all executions,
  `Model executed successfully 51 time(s) in 371.200000 ms.`, so one run gives a sum, not samples;
  `android` combines several runs. Load time is read off the log timestamps, from the first line to
  `Method loaded.`.
* ONNX Runtime `onnxruntime_perf_test` (test/perftest/performance_runner.cc): `Session creation time
  cost: 0.018 s`, `First inference time cost: 2 ms`, `Total inference requests: 1000`,
  `Average inference time cost: 0.94 ms`, `Peak working set size: 50905088 bytes`, and with
  statistics on (`-s`, the default without a result file) `Min/Max/P50/P90/P95/P99/P999 Latency: <s> s`.
* LiteRT's `benchmark_model` (tflite/tools/benchmark): `Inference timings in us: Init: 5685, First inference:
  18535, Warmup (avg): 14462.3, Inference (avg): 14575.2`, one `count=50 first=... curr=... min=... max=...
  avg=... std=...` line per phase (warm-up, then the timed runs; newer builds add `p5=... median=... p95=...`)
  and, with `--report_peak_memory_footprint=true`, `Overall peak memory footprint (MB) via periodic monitoring:
  52.1`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mobileclip_deploy.bench.records import Measurement
from mobileclip_deploy.errors import UserError

_NUM = r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)"
_ET_LINE = re.compile(r"^([DIEF]) (\d+):(\d{2}):(\d{2})\.(\d{6}) executorch:[^\]]*\] (.*)$", re.M)
_ET_TOTAL = re.compile(rf"Model executed successfully\s+(\d+)\s+time\(s\)\s+in\s+{_NUM}\s*ms")
_ET_FAIL = re.compile(r"(Execution of method .* failed.*|Loading of method .* failed.*|Failed to parse model file.*"
                      r"|FileDataLoader::from\(\) failed.*)")


class RunnerOutputError(UserError):
    """The runner's output has no timing we can use; the message quotes what it said instead."""


def _tail(text: str, n: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


@dataclass(frozen=True)
class ExecutorRunnerRun:
    """One executor_runner process: how many executions it timed, their summed time, and its load time."""

    executions: int
    total_ms: float
    load_ms: float | None


def parse_executor_runner(text: str) -> ExecutorRunnerRun:
    """The total-execution line and the log-timestamp load time of one executor_runner run."""
    fail = _ET_FAIL.search(text)
    if fail:
        raise RunnerOutputError(f"executor_runner failed: {fail.group(1)}")
    total = _ET_TOTAL.search(text)
    if not total:
        raise RunnerOutputError("no timing found in executor_runner output:\n" + _tail(text))
    stamps = [(int(h) * 3600 + int(m) * 60 + int(s) + int(us) / 1e6, msg)
              for _, h, m, s, us, msg in _ET_LINE.findall(text)]
    loaded = next((t for t, msg in stamps if msg.strip() == "Method loaded."), None)
    load_ms = (loaded - stamps[0][0]) * 1e3 if stamps and loaded is not None else None
    return ExecutorRunnerRun(int(total.group(1)), float(total.group(2)), load_ms)


_ORT_FIELDS = {
    "load_s": re.compile(rf"Session creation time cost:\s*{_NUM}\s*s"),
    "first_ms": re.compile(rf"First inference time cost:\s*{_NUM}\s*ms"),
    "requests": re.compile(r"Total inference requests:\s*(\d+)"),
    "avg_ms": re.compile(rf"Average inference time cost:\s*{_NUM}\s*ms"),
    "peak_bytes": re.compile(r"Peak working set size:\s*(\d+)\s*bytes"),
    "min_s": re.compile(rf"Min Latency:\s*{_NUM}\s*s"),
    "max_s": re.compile(rf"Max Latency:\s*{_NUM}\s*s"),
    "p50_s": re.compile(rf"P50 Latency:\s*{_NUM}\s*s"),
    "p90_s": re.compile(rf"P90 Latency:\s*{_NUM}\s*s"),
}


def parse_onnxruntime_perf_test(text: str) -> Measurement:
    """Summary numbers from onnxruntime_perf_test (it prints percentiles and a mean, not samples)."""
    got: dict[str, float] = {}
    for key, rx in _ORT_FIELDS.items():
        m = rx.search(text)
        if m:
            got[key] = float(m.group(1))
    if "p50_s" not in got and "avg_ms" not in got:
        raise RunnerOutputError("no timing found in onnxruntime_perf_test output:\n" + _tail(text))

    def ms(key: str) -> float | None:
        return got[key] * 1e3 if key in got else None

    summary = {"median": ms("p50_s"), "mean": got.get("avg_ms"), "trimmed_mean": None, "p90": ms("p90_s"),
               "min": ms("min_s"), "max": ms("max_s"), "stdev": None}
    extra = {"iterations": int(got.get("requests", 0)) or 1,
             "runner_note": "onnxruntime_perf_test: percentiles are its own (nearest rank); it has no warm-up "
                            "option, its one untimed run is the first inference"}
    peak = got["peak_bytes"] / 2**20 if got.get("peak_bytes") else None
    load_ms = got["load_s"] * 1e3 if "load_s" in got else None
    return Measurement([], load_ms, got.get("first_ms"), 0, peak_memory_mb=peak, summary_ms=summary, extra=extra)


_TFL_TIMINGS = re.compile(rf"Inference timings in us:\s*Init:\s*{_NUM},\s*First inference:\s*{_NUM},"
                          rf"(?:\s*Warmup \(avg\):\s*{_NUM},)?\s*Inference \(avg\):\s*{_NUM}")
_TFL_STAT = re.compile(r"count=(\d+)((?:\s+\w+=[-0-9.eE+]+)+)")
_TFL_PEAK = re.compile(rf"peak memory footprint \(MB\)[^:]*:\s*{_NUM}")
_TFL_FAIL = re.compile(r"(Failed to .*|Error: .*|ERROR: .*)")


def parse_benchmark_model(text: str) -> Measurement:
    """Summary numbers of LiteRT's benchmark_model (microseconds in its output, ms here)."""
    timings = _TFL_TIMINGS.search(text)
    if not timings:
        fail = _TFL_FAIL.search(text)
        raise RunnerOutputError("benchmark_model " + (f"failed: {fail.group(1)}" if fail else
                                                      "printed no timing:\n" + _tail(text)))
    init_us, first_us, _, avg_us = (float(v) if v else None for v in timings.groups())
    stats = _TFL_STAT.findall(text)
    count, fields = (int(stats[-1][0]), dict(f.split("=") for f in stats[-1][1].split())) if stats else (0, {})

    def ms(key: str) -> float | None:
        return float(fields[key]) / 1e3 if key in fields else None

    summary = {"median": ms("median"), "mean": avg_us / 1e3, "trimmed_mean": None, "p90": None, "min": ms("min"),
               "max": ms("max"), "stdev": ms("std")}
    warmup = int(stats[0][0]) if len(stats) > 1 else 0
    peak = _TFL_PEAK.search(text)
    extra = {"iterations": count or 1, "runner_note": "benchmark_model: mean/min/max/std are its own statistics "
             "over the timed runs (its median only where the build prints percentiles)"}
    return Measurement([], init_us / 1e3, first_us / 1e3, warmup, peak_memory_mb=float(peak.group(1)) if peak else None,
                       summary_ms=summary, extra=extra)

"""Parsers for the timing output of the on-device runners, in the formats those tools print.

* ExecuTorch `executor_runner` (examples/portable/executor_runner): ET_LOG lines such as
  `I 00:00:00.012 executorch:executor_runner.cpp:NNN] Model loaded in 12.3 ms.`,
  `... Iteration 3 of 50: 7.41 ms` and `... Model executed successfully 50 time(s) in 371.2 ms.`
  (older builds print only `Model executed successfully.`, which carries no timing).
* ONNX Runtime `onnxruntime_perf_test`: `Session creation time cost: 0.018 s`,
  `First inference time cost: 2 ms`, `Total inference requests: 1000`,
  `Average inference time cost: 0.94 ms`, `Peak working set size: 50905088 bytes`, and
  `Min/Max/P50/P90/P95/P99/P999 Latency: <seconds> s`.
"""

from __future__ import annotations

import re

from mobileclip_deploy.bench.records import Measurement

_NUM = r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)"
_ET_ITER = re.compile(rf"Iteration\s+(\d+)\s+of\s+(\d+):\s*{_NUM}\s*ms")
_ET_TOTAL = re.compile(rf"Model executed successfully\s+(\d+)\s+time\(s\)\s+in\s+{_NUM}\s*ms")
_ET_LOAD = re.compile(rf"Model loaded in\s+{_NUM}\s*ms")
_ET_FAIL = re.compile(r"(Execution of method .* failed.*|Loading of method .* failed.*|Failed to parse model file.*)")


class RunnerOutputError(ValueError):
    """The runner's output has no timing we can use; the message quotes what it said instead."""


def _tail(text: str, n: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def parse_executor_runner(text: str, warmup: int) -> Measurement:
    """Per-iteration times from executor_runner run with `--num_executions 1 + warmup + iterations`.

    Iteration 1 is the first inference, the next `warmup` are dropped, the rest are the samples.

    Without per-iteration lines but with the total, the mean is the only number and it includes
    the first (cold) execution; it is reported as a runner summary, not as samples.
    """
    fail = _ET_FAIL.search(text)
    if fail:
        raise RunnerOutputError(f"executor_runner failed: {fail.group(1)}")
    load = _ET_LOAD.search(text)
    load_ms = float(load.group(1)) if load else None
    iters = [(int(m.group(1)), float(m.group(3))) for m in _ET_ITER.finditer(text)]
    if iters:
        times = [t for _, t in sorted(iters)]
        if len(times) < warmup + 2:
            raise RunnerOutputError(f"executor_runner ran {len(times)} iteration(s); need first + {warmup} warm-up + 1")
        return Measurement(times[1 + warmup :], load_ms, times[0], warmup)
    total = _ET_TOTAL.search(text)
    if total:
        n, ms = int(total.group(1)), float(total.group(2))
        summary = {"median": ms / n, "trimmed_mean": None, "p90": None, "min": None, "max": None, "stdev": None}
        return Measurement([], load_ms, None, 0, summary_ms=summary,
                           extra={"iterations": n, "runner_note": "mean over all executions incl. the first"})
    raise RunnerOutputError("no timing found in executor_runner output:\n" + _tail(text))


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
    """Summary numbers from onnxruntime_perf_test (it prints percentiles, not samples)."""
    got: dict[str, float] = {}
    for key, rx in _ORT_FIELDS.items():
        m = rx.search(text)
        if m:
            got[key] = float(m.group(1))
    if "p50_s" not in got and "avg_ms" not in got:
        raise RunnerOutputError("no timing found in onnxruntime_perf_test output:\n" + _tail(text))
    median = got["p50_s"] * 1e3 if "p50_s" in got else got["avg_ms"]

    def ms(key: str) -> float | None:
        return got[key] * 1e3 if key in got else None

    summary = {"median": median, "trimmed_mean": None, "p90": ms("p90_s"), "min": ms("min_s"),
               "max": ms("max_s"), "stdev": None}
    extra = {"iterations": int(got.get("requests", 0)) or 1, "runner_mean_ms": got.get("avg_ms")}
    peak = got["peak_bytes"] / 2**20 if "peak_bytes" in got else None
    load_ms = got["load_s"] * 1e3 if "load_s" in got else None
    # perf_test runs one untimed warm-up itself (its "first inference").
    return Measurement([], load_ms, got.get("first_ms"), 1, peak_memory_mb=peak, summary_ms=summary, extra=extra)

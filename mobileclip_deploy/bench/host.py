"""Host runners: ONNX Runtime (CPU), the ExecuTorch runtime and eager PyTorch, each with its thread count fixed.

Every runner is a pair of callables (`load`, `run`) handed to `measure`, so load time, the first
inference and warm latency are timed the same way whatever the runtime.
"""

from __future__ import annotations

import gc
import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mobileclip_deploy.bench.artifacts import Artifact
from mobileclip_deploy.bench.records import Measurement
from mobileclip_deploy.errors import UserError

Progress = Callable[[int, int], None]

# "a photo of a dog" in CLIP BPE ids: a realistic token row without needing the tokenizer here
# (the text towers' cost does not depend on which ids are fed, only on the fixed 77-long shape).
EXAMPLE_TOKENS = [49406, 320, 1125, 539, 320, 1929, 49407]
CONTEXT_LENGTH = 77


def example_input(tower: str, shape: list[int] | tuple[int, ...], dtype: Any) -> np.ndarray:
    """Deterministic input for one tower: pixels in [0, 1] or a padded token row."""
    if tower == "image":
        return np.random.default_rng(0).random(tuple(shape), dtype=np.float32).astype(dtype)
    row = np.zeros(shape[-1], dtype=dtype)
    row[: len(EXAMPLE_TOKENS)] = EXAMPLE_TOKENS
    return np.tile(row, (shape[0], 1)) if len(shape) == 2 else row


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0) so each run reports its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_mb(key: str) -> float | None:
    """A `VmHWM` (peak) or `VmRSS` (current) figure of this process, in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def measure(
    load: Callable[[], Callable[[], object]],
    warmup: int,
    iterations: int,
    progress: Progress | None = None,
    max_seconds: float | None = None,
) -> Measurement:
    """Time `load()`, then the first call of the runner it returns, `warmup` untimed calls and `iterations` timed ones.

    `max_seconds` bounds a slow run (frontier sweeps): warm-up stops after a quarter of it, timed
    iterations after all of it but never below 5; the record keeps the counts actually run.
    Peak memory is the process's peak RSS during this run (runtime libraries included); the RSS just
    before loading is kept as `rss_before_load_mb`, so the run's own footprint is the difference.
    """
    if iterations < 1:
        raise UserError("--iterations must be at least 1")
    gc.collect()  # earlier runs' models must not count towards this one's memory
    peak_ok = _reset_peak_rss()
    rss_before = _status_mb("VmRSS")
    t0 = time.perf_counter()
    run = load()
    load_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    run()
    first_ms = (time.perf_counter() - t0) * 1e3
    total = warmup + iterations
    done_warmup = 0
    start = time.perf_counter()
    while done_warmup < warmup and (max_seconds is None or time.perf_counter() - start < max_seconds / 4):
        run()
        done_warmup += 1
        if progress:
            progress(done_warmup, total)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < iterations and (max_seconds is None or time.perf_counter() - start < max_seconds
                                         or len(samples) < min(5, iterations)):
        t0 = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t0) * 1e3)
        if progress:
            progress(warmup + len(samples), total)
    if progress:
        progress(total, total)
    peak = _status_mb("VmHWM") if peak_ok else None
    extra = {"rss_before_load_mb": rss_before} if peak is not None and rss_before is not None else {}
    return Measurement(samples, load_ms, first_ms, done_warmup, peak, extra=extra)


def loader_for(artifact: Artifact, threads: int) -> tuple[Callable[[], Callable[[], object]], dict[str, Any]]:
    """Load and run an exported artifact with its backend's runtime on this host (`runtimes.load`)."""
    from mobileclip_deploy import runtimes

    if artifact.runtime is None:
        raise UserError(f"{artifact.path.name}: {artifact.backend} artifacts cannot run on this host "
                        "(Core ML needs macOS: use --target ios on a Mac)")
    refused = runtimes.get(artifact.runtime).not_latency
    if refused:
        raise UserError(f"{artifact.path.name}: {refused}; time it on a device (bench --target ios)")
    info: dict[str, Any] = {}

    def load() -> Callable[[], object]:
        runner = runtimes.load(artifact.path, threads, runtime=artifact.runtime)
        info.update(runner.info)
        shape = artifact.input_shape or runner.input_shape
        x = example_input(artifact.tower or _guess_tower(shape), shape, runner.input_dtype)
        return lambda: runner(x)

    # The record's runtime: what the runner reported at load (`measure` loads before the record is written).
    return load, info


def eager_loader(
    build: Callable[[], Any], tower: str, image_size: int, threads: int
) -> tuple[Callable[[], Callable[[], object]], dict[str, Any]]:
    """Eager PyTorch baseline; `build()` returns the model (train-time or folded) in eval mode."""
    import torch

    def load() -> Callable[[], object]:
        torch.set_num_threads(threads)
        model = build()
        if tower == "image":
            x = torch.from_numpy(example_input("image", (1, 3, image_size, image_size), np.float32))
            fn = model.encode_image
        else:
            x = torch.from_numpy(example_input("text", (1, CONTEXT_LENGTH), np.int64))
            fn = model.encode_text

        def run() -> object:
            with torch.inference_mode():
                return fn(x)

        return run

    return load, {"name": "pytorch", "version": torch.__version__}


def _guess_tower(shape: list[int]) -> str:
    return "image" if len(shape) == 4 else "text"


def package_version(dist: str) -> str | None:
    from mobileclip_deploy.exporters.manifest import package_versions

    return package_versions([dist]).get(dist)


def host_device() -> dict[str, Any]:
    """The machine's identity for the record: CPU model, OS, core count and ISA extensions that matter for int8."""
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        cpu = m.group(1).strip() if m else cpu
        fm = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        flags = set(fm.group(1).split()) if fm else set()
    except OSError:
        pass
    return {
        "model": platform.machine(),
        "os": platform.platform(),
        "soc": cpu,
        "name": platform.node(),
        "cpu_count": os.cpu_count(),
        "isa": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma", "amx_int8"}),
        "python": platform.python_version(),
    }


def check_threads(n: int, cores: int | None = None) -> None:
    """Refuse more threads than cores (`cores`, default this machine's): such a run measures contention."""
    cores = cores or os.cpu_count() or 1
    if n > cores:
        raise UserError(f"--threads {n}: only {cores} cores here; more threads than cores measure contention, "
                        f"not the runtime (use at most {cores}, or 'all')")


def thread_counts(spec: str, all_cores: int | None = None) -> list[int]:
    """`--threads` value: a number, `all` (`all_cores`, default every core here), or a comma list such as `1,all`."""
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip().lower()
        if part == "all":
            n = all_cores or os.cpu_count() or 1
        elif part.isdigit() and int(part) > 0:
            n = int(part)
        else:
            raise UserError(f"--threads: {part!r} is not a positive number or 'all'")
        if all_cores is None:  # the host: this machine's cores (a phone's counts follow its big cores)
            check_threads(n)
        if n not in out:
            out.append(n)
    return out

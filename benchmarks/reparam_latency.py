#!/usr/bin/env python3
"""Eager PyTorch latency of train-time vs folded (reparameterized) encoders, and the speed-up folding buys.

    python benchmarks/reparam_latency.py [--models mobileclip-s0,mobileclip-s2,mobileclip-b]
                                         [--threads 1] [--warmup 5] [--repeats 30]

Batch 1, `torch.inference_mode()`, median over --repeats timed calls after --warmup untimed ones. Train-time and
folded calls alternate within each repeat, so load from other processes hits both alike. Weights are random:
latency does not depend on their values, so no checkpoint is needed (and the numbers mean nothing else).

Target (issue 2): folding makes MobileCLIP-S0's image encoder at least 1.3x faster at 1 thread.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from mobileclip_deploy import create_model, reparameterize, tokenize
from mobileclip_deploy.registry import get_variant

TARGET = ("mobileclip-s0", "image", 1.3)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def paired_medians(train: Callable[[], object], folded: Callable[[], object], warmup: int,
                   repeats: int) -> tuple[float, float]:
    """Median milliseconds of each callable, timed alternately so both see the same machine noise."""
    times: tuple[list[float], list[float]] = ([], [])
    with torch.inference_mode():
        for _ in range(warmup):
            train()
            folded()
        for _ in range(repeats):
            for fn, out in ((train, times[0]), (folded, times[1])):
                start = time.perf_counter()
                fn()
                out.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mobileclip-s0,mobileclip-s2,mobileclip-b")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__} | CPU {cpu_model()} | {torch.get_num_threads()} thread(s) | batch 1 | "
          f"warmup {args.warmup}, median of {args.repeats} | random weights (latency only)")
    header = f"{'model':<16} {'encoder':<7} {'train-time ms':>13} {'folded ms':>10} {'speed-up':>9}"
    print(header)
    print("-" * len(header))
    speedups = {}
    tokens = tokenize(["a photo of a dog."])
    for name in args.models.split(","):
        variant = get_variant(name.strip())
        torch.manual_seed(0)
        train = create_model(variant.name)
        folded = reparameterize(train)
        pixels = torch.rand(1, 3, variant.image_size, variant.image_size)
        for tower, fn, x in (("image", "encode_image", pixels), ("text", "encode_text", tokens)):
            t, f = paired_medians(lambda: getattr(train, fn)(x), lambda: getattr(folded, fn)(x), args.warmup,
                                  args.repeats)
            speedups[(variant.name, tower)] = t / f
            print(f"{variant.name:<16} {tower:<7} {t:>13.2f} {f:>10.2f} {t / f:>8.2f}x", flush=True)
        del train, folded
    model, tower, wanted = TARGET
    if (model, tower) in speedups:
        got = speedups[(model, tower)]
        print(f"\ntarget: folding makes the {model} {tower} encoder >= {wanted}x faster: got {got:.2f}x "
              f"({'met' if got >= wanted else 'NOT met'})")


if __name__ == "__main__":
    main()

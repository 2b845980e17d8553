#!/usr/bin/env python3
"""Why Core AI fp16 checks of transformer towers take so long: one op per program, fp32 vs fp16, on the reference runtime.

Core AI's Linux reference runtime (coreai-core) computes an fp16 program in fp16. Its fp16 matrix products are far
slower than its fp32 ones, while fp16 convolutions are not, so the parity check of an fp16 (or compressed) asset
costs seconds on a convolutional tower and many minutes on a ViT or a text transformer. Each op below is exported
alone with the backend's own `program` (ViT-B/16 shapes: 197 tokens, width 768), run once to warm up, then timed
(median of `--repeats`). Host timings of the reference runtime are not a latency figure for any device.

    python benchmarks/coreai_reference_ops.py [--repeats 3] [--out benchmarks/results/amd-epyc-avx2/coreai_reference_ops.md]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from mobileclip_deploy import runtimes
from mobileclip_deploy.atomic import write_text
from mobileclip_deploy.bench.host import host_device
from mobileclip_deploy.exporters.backends.coreai import program, save

TOKENS, WIDTH = 197, 768


class Linear(nn.Module):
    """A ViT-B projection (the qkv, proj and MLP layers are 12 of these per block, counted in 768x768 units)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Conv1x1(nn.Module):
    """The same products as `Linear`, as a 1x1 convolution (what MCi's convolutional stages run)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(WIDTH, WIDTH, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.transpose(1, 2).reshape(1, WIDTH, TOKENS, 1))


class Scores(nn.Module):
    """Attention scores of all heads at once (tokens x tokens x width products), then softmax."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x @ x.transpose(-1, -2), dim=-1)


class Norm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class Gelu(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(x)


OPS = {"linear 768x768": Linear, "conv 1x1 768x768": Conv1x1, "attention scores + softmax": Scores,
       "layer norm": Norm, "gelu": Gelu}


def seconds(module: nn.Module, x: torch.Tensor, fp16: bool, repeats: int, folder: Path) -> float:
    path = folder / f"{type(module).__name__}_{'fp16' if fp16 else 'fp32'}.aimodel"
    save(program(module.eval(), x, "image", fp16), path, {})
    runner = runtimes.load(path, threads=1)
    runner.batched(x.numpy())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner.batched(x.numpy())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(1, TOKENS, WIDTH)
    device = host_device()
    lines = ["# Core AI reference runtime: one op, fp32 vs fp16 program", "",
             (f"Machine: {device['soc']} ({', '.join(device['isa'])}), {device['cpu_count']} cores; one thread; "
              f"input {TOKENS}x{WIDTH}; median of {args.repeats} runs after one warm-up. "
              "`python benchmarks/coreai_reference_ops.py`"), "",
             "| op | fp32 ms | fp16 ms | fp16 / fp32 |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="coreai_ops.") as tmp:
        for name, make in OPS.items():
            fp32, fp16 = (seconds(make(), x, half, args.repeats, Path(tmp)) for half in (False, True))
            lines.append(f"| {name} | {fp32 * 1e3:.1f} | {fp16 * 1e3:.1f} | {fp16 / fp32:.1f}x |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        write_text(args.out, text, replace=True)
    print(text)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Why the ExecuTorch XNNPACK export bands its 7×7 depthwise convs: latency of 4 stacked 7×7 depthwise layers
at S0's stage shapes, as one plain conv and as row bands (exporters/depthwise_bands.py), on the ExecuTorch
XNNPACK runtime and, for scale, ONNX Runtime. Batch 1, median of --repeats calls after 3 warm-up ones.

    python benchmarks/depthwise_xnnpack.py [--threads 1] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from mobileclip_deploy.exporters.depthwise_bands import split_wide_depthwise

SHAPES = [(64, 64), (128, 32), (256, 16), (512, 8)]  # (channels, height = width) of S0's four stages


def median_ms(run: Callable[[], object], repeats: int) -> float:
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def executorch_ms(module: nn.Module, x: torch.Tensor, folder: Path, threads: int, repeats: int) -> float:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    portable_lib._unsafe_reset_threadpool(threads)
    path = folder / "layer.pte"
    with torch.no_grad():
        edge = to_edge_transform_and_lower(torch.export.export(module, (x,)), partitioner=[XnnpackPartitioner()])
    path.write_bytes(edge.to_executorch().buffer)
    method = Runtime.get().load_program(str(path)).load_method("forward")
    return median_ms(lambda: method.execute((x,)), repeats)


def onnxruntime_ms(module: nn.Module, x: torch.Tensor, folder: Path, threads: int, repeats: int) -> float:
    import onnxruntime as ort

    path = folder / "layer.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=True, opset_version=20, external_data=False,
                          input_names=["x"], verbose=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = threads, 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    return median_ms(lambda: session.run(None, feed), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"4 x depthwise 7x7 conv, batch 1, {args.threads} thread(s), median of {args.repeats} (ms)")
    print(f"{'C x H x W':>14} {'xnnpack 7x7':>12} {'xnnpack bands':>14} {'speed-up':>9} {'onnxruntime':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for channels, size in SHAPES:
            torch.manual_seed(0)
            plain = nn.Sequential(*[nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
                                    for _ in range(4)]).eval()
            banded = split_wide_depthwise(plain).eval()
            x = torch.rand(1, channels, size, size)
            et_plain = executorch_ms(plain, x, folder, args.threads, args.repeats)
            et_banded = executorch_ms(banded, x, folder, args.threads, args.repeats)
            ort_plain = onnxruntime_ms(plain, x, folder, args.threads, args.repeats)
            print(f"{f'{channels}x{size}x{size}':>14} {et_plain:12.2f} {et_banded:14.2f} "
                  f"{et_plain / et_banded:8.2f}x {ort_plain:12.2f}", flush=True)


if __name__ == "__main__":
    main()

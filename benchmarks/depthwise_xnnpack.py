#!/usr/bin/env python3
"""Why the ExecuTorch XNNPACK export rewrites depthwise convs (exporters/xnnpack_depthwise.py) and keeps them float
in static int8: latency of S0's depthwise shapes as plain convs, rewritten, and rewritten in static int8 (w8a8,
calibrated on random inputs) on the ExecuTorch XNNPACK runtime and, for scale, the plain convs on ONNX Runtime. Rows: 4 stacked 7×7 stride-1 layers at each stage's shape (ConvFFN), and one 7×7 stride-2 C→2C
layer at each PatchEmbed's input shape. Batch 1, median of --repeats calls after 3 warm-up ones.

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

from mobileclip_deploy.exporters.xnnpack_depthwise import split_depthwise

# (channels, height = width, stride, channel multiplier, layers): S0's ConvFFN and PatchEmbed depthwise convs
SHAPES = [(64, 64, 1, 1, 4), (128, 32, 1, 1, 4), (256, 16, 1, 1, 4), (512, 8, 1, 1, 4),
          (64, 64, 2, 2, 1), (128, 32, 2, 2, 1), (256, 16, 2, 2, 1)]


def median_ms(run: Callable[[], object], repeats: int) -> float:
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def executorch_ms(module: nn.Module, x: torch.Tensor, folder: Path, threads: int, repeats: int,
                  int8: bool = False) -> float:
    """`int8`: the export's own w8a8 of `module` with every conv quantized (it splits depthwise convs itself)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    from mobileclip_deploy.exporters import executorch as et_exp

    portable_lib._unsafe_reset_threadpool(threads)
    path = folder / "layer.pte"
    if int8:
        calibration = torch.rand(8, *x.shape[1:], generator=torch.Generator().manual_seed(1)).numpy()
        et_exp.export(module, x, "w8a8", "xnnpack", path, calibration, keep=[])
    else:
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
    print(f"depthwise 7x7 convs, batch 1, {args.threads} thread(s), median of {args.repeats} (ms)")
    print(f"{'layers':>26} {'xnnpack plain':>14} {'xnnpack split':>14} {'speed-up':>9} {'split int8':>11} "
          f"{'int8/fp32':>9} {'onnxruntime':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for channels, size, stride, multiplier, layers in SHAPES:
            torch.manual_seed(0)
            plain = nn.Sequential(*[nn.Conv2d(channels, channels * multiplier, 7, stride, 3, groups=channels)
                                    for _ in range(layers)]).eval()
            x = torch.rand(1, channels, size, size)
            et_plain = executorch_ms(plain, x, folder, args.threads, args.repeats)
            et_split = executorch_ms(split_depthwise(plain).eval(), x, folder, args.threads, args.repeats)
            et_int8 = executorch_ms(plain, x, folder, args.threads, args.repeats, int8=True)
            ort_plain = onnxruntime_ms(plain, x, folder, args.threads, args.repeats)
            label = f"{layers} x {channels}x{size}x{size} s{stride} m{multiplier}"
            print(f"{label:>26} {et_plain:14.2f} {et_split:14.2f} {et_plain / et_split:8.2f}x {et_int8:11.2f} "
                  f"{et_int8 / et_split:8.2f}x {ort_plain:12.2f}", flush=True)

if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Where an exported encoder's time goes: per-operator time of one model on ExecuTorch XNNPACK (from an ETDump
read with executorch.devtools.Inspector) and on ONNX Runtime (its own profiler), summed by operator type.

    python benchmarks/op_profile.py [--model mobileclip-s0] [--tower image] [--threads 1] [--iterations 20]
    python benchmarks/op_profile.py --schemes fp32,w8a8 [--calibration PHOTOS]   # where int8 time goes

Each operator's median over --iterations calls is summed per type. The dense-GEMM share (1x1 convs and linear
layers, FLOPs counted on the folded PyTorch tower) is printed as GFLOP/s, to compare with this CPU's matmul
throughput (benchmarks/host_latency.py). Weights are random; artifacts are cached in --work-dir as in
host_latency.py. Profiling adds a little overhead: the totals run above the plain latency. ONNX Runtime convs
are split into depthwise and dense by kernel size, the split that showed why static int8 of MCi image towers
was slow (QLinearConv on 7x7 depthwise convs runs ~10x slower than fp32 Conv; exporters/autoquant.py).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobileclip_deploy import create_model, reparameterize
from mobileclip_deploy.bench.sweep import SweepConfig, build_artifacts
from mobileclip_deploy.exporters.wrappers import example_input, tower_module
from mobileclip_deploy.registry import get_variant

BACKENDS = ("executorch-xnnpack", "onnx")


def gemm_gflop(name: str, tower: str) -> float:
    """FLOPs (multiply-add = 2) of the tower's 1x1 convs and linear layers: the work a dense GEMM does."""
    v = get_variant(name)
    module = tower_module(reparameterize(create_model(v.name)), tower, v.image_size, v.context_length)
    total = 0

    def count(layer: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Linear):
            total += 2 * out.numel() * layer.in_features
        elif isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.groups == 1:
            total += 2 * out.numel() * layer.in_channels

    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        module(example_input(tower, v.image_size, v.context_length))
    for hook in hooks:
        hook.remove()
    return total / 1e9


def executorch_ops(path: Path, x: np.ndarray, threads: int, iterations: int) -> dict[str, list[float]]:
    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(threads)
    module = portable_lib._load_for_executorch(str(path), enable_etdump=True)
    tensor = torch.from_numpy(x)
    for _ in range(iterations):
        module.forward((tensor,))
    per_type: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        etdump = Path(tmp) / "run.etdp"
        module.write_etdump_result_to_file(str(etdump))
        for block in Inspector(etdump_path=str(etdump)).event_blocks:
            for event in block.events if block.name == "Execute" else []:
                if event.perf_data is not None and event.name not in ("DELEGATE_CALL", "Method::execute"):
                    per_type[re.sub(r" #\d+$", "", event.name)].append(event.perf_data.p50)
    return per_type


def onnxruntime_ops(path: Path, x: np.ndarray, threads: int, iterations: int) -> dict[str, list[float]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.enable_profiling = threads, True
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as `bench` runs it
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(iterations):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
        convs = _conv_kinds(path, tmp)
    per_node: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = e["name"].removesuffix("_kernel_time")
            per_node[(e["args"]["op_name"] + convs.get(node, ""), node)].append(e["dur"] / 1e3)
    per_type: dict[str, list[float]] = defaultdict(list)
    for (op, _), times in per_node.items():
        per_type[op].append(statistics.median(times))
    return per_type


def _conv_kinds(path: Path, tmp: str) -> dict[str, str]:
    """` depthwise 7x7` / ` dense 1x1` per conv node of the graph ONNX Runtime actually runs (after fusions)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath, options.log_severity_level = str(Path(tmp) / "optimized.onnx"), 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    kinds = {}
    for node in onnx.load(options.optimized_model_filepath).graph.node:
        if node.op_type.endswith("Conv"):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            kernel = "x".join(map(str, attrs.get("kernel_shape", [])))
            kinds[node.name] = f" {'depthwise' if attrs.get('group', 1) > 1 else 'dense'} {kernel}"
    return kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mobileclip-s0")
    ap.add_argument("--tower", choices=("image", "text"), default="image")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--schemes", default="fp32", help="comma list, e.g. fp32,w8a8,8da8w (static ones calibrate)")
    ap.add_argument("--calibration", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
                    / "imagenet-samples", help="photos for static schemes (w8a8)")
    ap.add_argument("--work-dir", type=Path, default=Path.home() / ".cache/mobileclip-deploy/host_latency")
    args = ap.parse_args()

    v = get_variant(args.model)
    schemes = tuple((b, s) for s in args.schemes.split(",") for b in BACKENDS)
    cfg = SweepConfig((v.name,), schemes, args.work_dir, {}, args.threads, 0, 0, calibration=args.calibration)
    artifacts = {(a.backend, a.scheme): a for a in build_artifacts(cfg, v.name, print) if a.tower == args.tower}
    x = example_input(args.tower, v.image_size, v.context_length).numpy()
    gflop = gemm_gflop(v.name, args.tower)
    profilers = {"executorch-xnnpack": executorch_ops, "onnx": onnxruntime_ops}
    for (backend, scheme), artifact in sorted(artifacts.items()):
        per_type = profilers[backend](artifact.path, x, args.threads, args.iterations)
        total = sum(sum(t) for t in per_type.values())
        print(f"\n{v.display_name} {args.tower} on {backend} {scheme}, {args.threads} thread(s): per-op medians of "
              f"{args.iterations} calls, summed = {total:.2f} ms")
        for op, times in sorted(per_type.items(), key=lambda kv: -sum(kv[1])):
            print(f"  {sum(times):8.2f} ms {len(times):4d}x  {op}")
        gemm = sum(sum(t) for op, t in per_type.items() if op.startswith(("Fully Connected", "Gemm", "MatMul")))
        if backend == "executorch-xnnpack" and scheme == "fp32" and gemm:
            print(f"  dense GEMMs: {gflop:.2f} GFLOP in {gemm:.2f} ms = {gflop / gemm * 1e3:.1f} GFLOP/s")


if __name__ == "__main__":
    main()

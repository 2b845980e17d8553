#!/usr/bin/env python3
"""Where an exported encoder's time goes: per-operator time of one model on ExecuTorch XNNPACK (from an ETDump
read with executorch.devtools.Inspector) and on ONNX Runtime (its own profiler), summed by operator type.

    python benchmarks/op_profile.py [--model mobileclip-s0] [--tower image] [--threads 1] [--iterations 20]

Each operator's median over --iterations calls is summed per type. The dense-GEMM share (1x1 convs and linear
layers, FLOPs counted on the folded PyTorch tower) is printed as GFLOP/s, to compare with this CPU's matmul
throughput (benchmarks/host_latency.py). Weights are random; artifacts are cached in --work-dir as in
host_latency.py. Profiling adds a little overhead: the totals run above the plain latency.
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

SCHEMES = (("executorch-xnnpack", "fp32"), ("onnx", "fp32"))


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
    per_node: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[(e["args"]["op_name"], e["name"])].append(e["dur"] / 1e3)
    per_type: dict[str, list[float]] = defaultdict(list)
    for (op, _), times in per_node.items():
        per_type[op].append(statistics.median(times))
    return per_type


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mobileclip-s0")
    ap.add_argument("--tower", choices=("image", "text"), default="image")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--work-dir", type=Path, default=Path.home() / ".cache/mobileclip-deploy/host_latency")
    args = ap.parse_args()

    v = get_variant(args.model)
    cfg = SweepConfig((v.name,), SCHEMES, args.work_dir, {}, args.threads, 0, 0)
    artifacts = {a.backend: a for a in build_artifacts(cfg, v.name, print) if a.tower == args.tower}
    x = example_input(args.tower, v.image_size, v.context_length).numpy()
    gflop = gemm_gflop(v.name, args.tower)
    for backend, profile in (("executorch-xnnpack", executorch_ops), ("onnx", onnxruntime_ops)):
        per_type = profile(artifacts[backend].path, x, args.threads, args.iterations)
        total = sum(sum(t) for t in per_type.values())
        print(f"\n{v.display_name} {args.tower} on {backend} fp32, {args.threads} thread(s): per-op medians of "
              f"{args.iterations} calls, summed = {total:.2f} ms")
        for op, times in sorted(per_type.items(), key=lambda kv: -sum(kv[1])):
            print(f"  {sum(times):8.2f} ms {len(times):4d}x  {op}")
        gemm = sum(sum(t) for op, t in per_type.items() if op.startswith(("Fully Connected", "Gemm", "MatMul")))
        if backend == "executorch-xnnpack" and gemm:
            print(f"  dense GEMMs: {gflop:.2f} GFLOP in {gemm:.2f} ms = {gflop / gemm * 1e3:.1f} GFLOP/s")


if __name__ == "__main__":
    main()

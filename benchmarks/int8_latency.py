#!/usr/bin/env python3
"""int8 against fp32, per tower, at 1 thread: ONNX Runtime (static QDQ: the hand-written float list `w8a8` and the
searched `auto` plan) and ExecuTorch XNNPACK (`w8a8`, `auto`, `8da8w`, `auto-8da8w`), with latency, ratio to fp32,
ratio to the int8 compute bound, and the export's parity (min cosine, zero-shot top-1 agreement on held-out photos).

    python benchmarks/int8_latency.py [--models mobileclip-s0,mobileclip-s2,mobileclip-b] [--rounds 8]

Weights are the golden recipe of ../shared/README.md (tests/goldens.py), so cosine and agreement are those of a
real, deterministic model, not of random init. Exports go through the real pipeline into --work-dir (its manifest
cache reuses an artifact only for the same weights, options and package source). The int8 compute bound is the
tower's FLOPs / the best single-thread int8 GEMM throughput measured in this run (ONNX Runtime MatMulInteger and
QLinearMatMul, u8 x s8, on large square matrices); XNNPACK's own f32 and qs8 GEMM throughput (a 1024^3 Linear
exported as fp32 and w8a8) is printed beside it. Latencies of one tower's artifacts are interleaved (rounds of a
few calls of each) so load from other processes hits fp32 and int8 alike. Writes int8_latency.md / .json to
--results-dir, naming the machine and its load. Models that do not finish are listed as not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mobileclip_deploy import create_model, reparameterize
from mobileclip_deploy.atomic import write_text
from mobileclip_deploy.bench.artifacts import Artifact
from mobileclip_deploy.bench.host import host_device, loader_for, package_version
from mobileclip_deploy.bench.records import now_iso
from mobileclip_deploy.bench.stats import interleaved_medians
from mobileclip_deploy.exporters import pipeline
from mobileclip_deploy.exporters.schemes import get_backend
from mobileclip_deploy.exporters.wrappers import example_input, tower_module
from mobileclip_deploy.registry import get_variant

sys.path.insert(0, str(Path(__file__).parent))
from host_latency import BLOCK  # noqa: E402 - the sibling script's calls per round

REPO = Path(__file__).resolve().parents[1]
PAIRS = [("onnx", "fp32"), ("onnx", "w8a8"), ("onnx", "auto"), ("executorch-xnnpack", "fp32"),
         ("executorch-xnnpack", "w8a8"), ("executorch-xnnpack", "auto"), ("executorch-xnnpack", "8da8w"),
         ("executorch-xnnpack", "auto-8da8w")]
TARGET_RATIO, TARGET_COS, TARGET_AGREE = 0.45, 0.999, 0.99


def int8_gemm_gops(seconds: float = 1.5, n: int = 1024) -> dict[str, float]:
    """Best single-thread u8 x s8 GEMM throughput (GOP/s, multiply-add = 2) of ONNX Runtime's int8 MatMul ops."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (n, n), dtype=np.uint8)
    b = numpy_helper.from_array(rng.integers(-127, 127, (n, n), dtype=np.int8), "b")
    scalars = [numpy_helper.from_array(np.array(v, dtype=t), name) for name, v, t in
               (("sa", 0.02, np.float32), ("za", 128, np.uint8), ("sb", 0.01, np.float32), ("zb", 0, np.int8),
                ("sy", 0.5, np.float32), ("zy", 128, np.uint8))]
    graphs = {
        "MatMulInteger": ([helper.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])], TensorProto.INT32),
        "QLinearMatMul": ([helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"])],
                          TensorProto.UINT8),
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = 1, 3
    best = {}
    for op, (nodes, out_type) in graphs.items():
        graph = helper.make_graph(nodes, op, [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
                                  [helper.make_tensor_value_info("y", out_type, [n, n])], [b, *scalars])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        best[op] = _best_gops(lambda: session.run(None, {"a": a}), 2 * n**3, seconds)
    return best


def _best_gops(call, ops: int, seconds: float) -> float:
    """The best throughput (G ops/s) of `call` over `seconds` of repeated calls, after one warm-up call."""
    call()
    end, top = time.perf_counter() + seconds, 0.0
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        call()
        top = max(top, ops / (time.perf_counter() - t0) / 1e9)
    return round(top, 1)


def xnnpack_gemm_gops(work: Path, seconds: float = 1.5, n: int = 1024) -> dict[str, float]:
    """Best single-thread GEMM throughput (G(FL)OP/s) of ExecuTorch XNNPACK on an n x n x n Linear, exported by this
    package as fp32 and as static int8 (`w8a8`, the same quantizer as the towers'): whether XNNPACK's int8 kernels
    are faster than its fp32 ones on this CPU at all."""
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    from mobileclip_deploy.exporters import executorch as et_exp

    portable_lib._unsafe_reset_threadpool(1)
    linear = torch.nn.Linear(n, n, bias=False).eval()
    x = torch.rand(1, n, n, generator=torch.Generator().manual_seed(0))
    work.mkdir(parents=True, exist_ok=True)
    best = {}
    for scheme in ("fp32", "w8a8"):
        path = work / f"gemm{n}_{scheme}.pte"
        with torch.no_grad():
            et_exp.export(linear, x, scheme, "xnnpack", path, x.numpy() if scheme == "w8a8" else None)
        method = Runtime.get().load_program(str(path)).load_method("forward")
        best[f"XNNPACK {'f32' if scheme == 'fp32' else 'qs8'} Linear"] = _best_gops(lambda: method.execute((x,)),
                                                                                   2 * n**3, seconds)
    return best


def tower_gflop(model: torch.nn.Module, v, tower: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    module = tower_module(model, tower, v.image_size, v.context_length)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(example_input(tower, v.image_size, v.context_length))
    return counter.get_total_flops() / 1e9


def golden_model(name: str) -> tuple[torch.nn.Module, Path]:
    sys.path.insert(0, str(REPO / "tests"))
    from goldens import NATIVE_MANIFEST, make_golden_state_dict, manifest_path

    shared = Path(os.environ.get("MOBILECLIP_SHARED", REPO.parent / "shared"))
    path = Path.home() / ".cache/mobileclip-deploy/int8_latency" / f"{name}.golden.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(make_golden_state_dict(manifest_path(shared, NATIVE_MANIFEST[name])), path)
    return create_model(name, path), path


def measure_model(name: str, args, gops: float) -> list[dict]:
    from mobileclip_deploy.hashing import sha256_path

    v = get_variant(name)
    model, ckpt = golden_model(name)
    out = args.work_dir / name
    pairs = [(get_backend(b), get_backend(b).scheme(s)) for b, s in PAIRS]
    request = pipeline.ExportRequest(pairs=pairs, output_dir=out, calibration=args.calibration, ort=False)
    print(f"{v.display_name}: exporting (cached in {out})", flush=True)
    results = pipeline.run(request, model, v, sha256_path(ckpt))
    for r in results:
        if r.status == "failed":
            print(f"  not exported: {r.message[:300]}", flush=True)
    manifest = json.loads((out / "manifest.json").read_text())
    entries = {(e["tower"], e["backend"], e["scheme"]): e for e in manifest["artifacts"]}
    folded = reparameterize(model).eval()
    rows = []
    for tower in ("image", "text"):
        gflop = tower_gflop(folded, v, tower)
        present = {k: e for k, e in entries.items() if k[0] == tower}
        loaders = {f"{b} {s}": loader_for(Artifact(out / e["file"], name, tower, b, s, e), 1)[0]
                   for (_, b, s), e in present.items()}
        ms = interleaved_medians({n: load() for n, load in loaders.items()}, args.rounds, BLOCK)
        for (_, backend, scheme), e in present.items():
            fp32 = ms.get(f"{backend} fp32")
            p = e.get("parity") or {}
            rows.append({"model": v.display_name, "tower": tower, "backend": backend, "scheme": scheme,
                         "median_ms": round(ms[f"{backend} {scheme}"], 2),
                         "ratio_to_fp32": round(ms[f"{backend} {scheme}"] / fp32, 3) if fp32 else None,
                         "int8_bound_ms": round(gflop / gops * 1e3, 2),
                         "ratio_to_int8_bound": round(ms[f"{backend} {scheme}"] / (gflop / gops * 1e3), 2),
                         "gflop": round(gflop, 3), "min_cosine": p.get("min_cosine"),
                         "top1_agreement": p.get("zero_shot_top1_agreement"),
                         "kept_in_float": len(e["details"].get("kept_in_float", [])) if scheme != "fp32" else None})
            r = rows[-1]
            print(f"  {tower:5s} {backend:18s} {scheme:5s} {r['median_ms']:8.2f} ms  x fp32 {r['ratio_to_fp32']}  "
                  f"x int8 bound {r['ratio_to_int8_bound']}  cos {r['min_cosine']}  top-1 {r['top1_agreement']}",
                  flush=True)
    return rows


def markdown(summary: dict) -> str:
    m = summary["machine"]
    lines = ["# int8 vs fp32 latency (benchmarks/int8_latency.py)", "",
             f"- machine: {m['cpu']} ({m['cores']} cores; {', '.join(m['isa'])}), {m['os']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()),
             f"- date: {summary['date']}; 1 thread; batch 1; interleaved medians of {summary['rounds'] * BLOCK} calls",
             f"- load average (1 min) at start / end: {summary['load_average'][0]:.2f} / "
             f"{summary['load_average'][1]:.2f} (shared machine: above ~1 the figures are pessimistic and noisy)",
             f"- int8 GEMM throughput (ONNX Runtime, 1 thread, u8 x s8 1024^3): {summary['int8_gemm_gops']} GOP/s; "
             "bound = tower FLOPs / the best of them",
             f"- ExecuTorch XNNPACK GEMM throughput (1 thread, 1024^3 Linear, fp32 and w8a8 exports): "
             f"{summary['xnnpack_gemm_gops']} G(FL)OP/s: where qs8 is no faster than f32, no choice of int8 layers "
             "makes an XNNPACK tower faster than fp32",
             "- weights: golden recipe; parity on held-out ImageNet sample photos (image) and prompts (text)", "",
             "| model | tower | runtime | scheme | median ms | x fp32 | x int8 bound | min cos | top-1 agree |"
             " float units |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in summary["rows"]:
        lines.append(f"| {r['model']} | {r['tower']} | {r['backend']} | {r['scheme']} | {r['median_ms']:.2f} | "
                     f"{r['ratio_to_fp32']} | {r['ratio_to_int8_bound']} | {r['min_cosine']} | "
                     f"{r['top1_agreement']} | {r['kept_in_float']} |")
    lines += [f"- not measured: {x}" for x in summary["not_measured"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mobileclip-s0,mobileclip-s2,mobileclip-b")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--calibration", type=Path, default=REPO.parent / "shared" / "data" / "imagenet-samples")
    ap.add_argument("--work-dir", type=Path, default=Path.home() / ".cache/mobileclip-deploy/int8_latency")
    ap.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]
    device = host_device()
    gemm = int8_gemm_gops()
    xnnpack = xnnpack_gemm_gops(args.work_dir / "gemm")
    print(f"host: {device['soc']} ({device['cpu_count']} cores, {', '.join(device['isa'])}); load {load_start:.2f}; "
          f"int8 GEMM {gemm} GOP/s; XNNPACK {xnnpack} G(FL)OP/s", flush=True)
    summary = {"date": now_iso(), "rounds": args.rounds, "int8_gemm_gops": gemm, "xnnpack_gemm_gops": xnnpack,
               "rows": [], "not_measured": [],
               "machine": {"cpu": device["soc"], "cores": device["cpu_count"], "isa": device["isa"],
                           "os": device["os"]},
               "versions": {k: package_version(k) for k in ("torch", "onnxruntime", "executorch", "mobileclip-deploy")}}
    for name in args.models.split(","):
        try:
            summary["rows"] += measure_model(name, args, max(gemm.values()))
        except Exception as exc:  # noqa: BLE001 - record what finished, name what did not
            summary["not_measured"].append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
        summary["load_average"] = [load_start, os.getloadavg()[0]]
        write_text(args.results_dir / "int8_latency.json", json.dumps(summary, indent=1) + "\n", replace=True)
        write_text(args.results_dir / "int8_latency.md", markdown(summary), replace=True)
    print(f"wrote {args.results_dir / 'int8_latency.md'}")


if __name__ == "__main__":
    main()

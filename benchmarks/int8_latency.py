#!/usr/bin/env python3
"""int8 against fp32, per tower, at 1 thread: ONNX Runtime (static QDQ: the hand-written float list `w8a8` and the
searched `auto` plan) and ExecuTorch XNNPACK (`w8a8`, `auto`, `8da8w`, `auto-8da8w`), with latency, ratio to fp32,
ratio to the int8 compute bound, and the export's parity (min cosine, zero-shot top-1 agreement on held-out photos).

    python benchmarks/int8_latency.py [--models mobileclip-s0,mobileclip-s2,mobileclip-b] [--rounds 8] [--cached-only]

Weights are the golden recipe of ../shared/README.md (tests/goldens.py), so cosine and agreement are those of a
real, deterministic model, not of random init. Exports go through the real pipeline into --work-dir (its manifest
cache reuses an artifact only for the same weights, options and package source). The int8 compute bound is the
tower's FLOPs / the best single-thread int8 GEMM throughput measured in this run (ONNX Runtime MatMulInteger and
QLinearMatMul, u8 x s8, on large square matrices); ONNX Runtime's fp32 MatMul on the same shape gives the lowest
int8/fp32 ratio a GEMM-bound tower can reach, and XNNPACK's own f32 and qs8 GEMM throughput (a 1024^3 Linear
exported as fp32 and w8a8) is printed beside it. Latencies of one tower's artifacts are interleaved (rounds of a
few calls of each) so load from other processes hits fp32 and int8 alike. Exports and searches use every core
(S0, S2 and B take hours here), only the timing is single-threaded; a second run over the same --work-dir reuses
every export and times all rows in minutes, and the results say how many artifacts each run exported itself
(--cached-only times what is there and exports nothing).
Writes int8_latency.md / .json to --results-dir, naming the machine and its load, with the issue's targets checked
on the rows. Models that do not finish are listed as not measured.
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
from mobileclip_deploy.exporters.backends import get_backend
from mobileclip_deploy.exporters.wrappers import example_input, tower_module
from mobileclip_deploy.registry import get_variant

sys.path.insert(0, str(Path(__file__).parent))
from host_latency import BLOCK  # noqa: E402 - the sibling script's calls per round

REPO = Path(__file__).resolve().parents[1]
PAIRS = [("onnx", "fp32"), ("onnx", "w8a8"), ("onnx", "auto"), ("executorch-xnnpack", "fp32"),
         ("executorch-xnnpack", "w8a8"), ("executorch-xnnpack", "auto"), ("executorch-xnnpack", "8da8w"),
         ("executorch-xnnpack", "auto-8da8w")]
TARGET_RATIO, TARGET_COS, TARGET_AGREE = 0.45, 0.999, 0.99
TEXT_PROMPTS = 32  # held-out prompts whose top-1 held-out photo gives a text tower's agreement


def ort_gemm_gops(seconds: float = 1.5, n: int = 1024) -> dict[str, float]:
    """Best single-thread GEMM throughput (G(FL)OP/s, multiply-add = 2) of ONNX Runtime's int8 MatMul ops (u8 x s8)
    and of its fp32 MatMul: their ratio is the lowest int8/fp32 latency ratio a GEMM-bound tower can reach."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (n, n), dtype=np.uint8)
    b = rng.integers(-127, 127, (n, n), dtype=np.int8)
    weights = [numpy_helper.from_array(b, "b"), numpy_helper.from_array(b.astype(np.float32), "bf")]
    scalars = [numpy_helper.from_array(np.array(v, dtype=t), name) for name, v, t in
               (("sa", 0.02, np.float32), ("za", 128, np.uint8), ("sb", 0.01, np.float32), ("zb", 0, np.int8),
                ("sy", 0.5, np.float32), ("zy", 128, np.uint8))]
    graphs = {  # op: (nodes, input type, output type, input)
        "MatMulInteger": ([helper.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])], TensorProto.UINT8,
                          TensorProto.INT32, a),
        "QLinearMatMul": ([helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"])],
                          TensorProto.UINT8, TensorProto.UINT8, a),
        "MatMul f32": ([helper.make_node("MatMul", ["a", "bf"], ["y"])], TensorProto.FLOAT, TensorProto.FLOAT,
                       a.astype(np.float32)),
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = 1, 3
    best = {}
    for op, (nodes, in_type, out_type, feed) in graphs.items():
        graph = helper.make_graph(nodes, op, [helper.make_tensor_value_info("a", in_type, [n, n])],
                                  [helper.make_tensor_value_info("y", out_type, [n, n])], [*weights, *scalars])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        best[op] = _best_gops(lambda s=session, x=feed: s.run(None, {"a": x}), 2 * n**3, seconds)
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


def text_agreements(folded: torch.nn.Module, v, request, out: Path, entries: dict) -> dict[tuple[str, str], float]:
    """Top-1 agreement of each text artifact with fp32: the share of TEXT_PROMPTS ImageNet prompts (none of the
    export's calibration or parity prompts) whose nearest held-out photo (the export's parity photos, fp32 image
    embeddings) is the same with the artifact's and the fp32 tower's text embeddings, as `--quant auto` scores it."""
    from mobileclip_deploy import runtimes
    from mobileclip_deploy.exporters.parity import run_batched, top1_agreement
    from mobileclip_deploy.tokenizer import tokenize
    from mobileclip_deploy.zeroshot import imagenet_classnames, openai_templates

    names, templates = imagenet_classnames(), openai_templates()
    prompts = [templates[(3 * i + 5) % len(templates)].replace("{}", names[(i * 613 + 211) % len(names)])
               for i in range(TEXT_PROMPTS)]
    tokens = tokenize(prompts, v.context_length).to(torch.int32).numpy()
    photos = pipeline.context(folded, v, request).reference("image")
    text = tower_module(folded, "text", v.image_size, v.context_length)
    with torch.no_grad():
        reference = run_batched(lambda b: text(torch.from_numpy(b)).numpy(), tokens)
    agreement = {}
    for (tower, backend, scheme), e in entries.items():
        if tower == "text" and scheme != "fp32":
            path = out / e["file"]
            run = runtimes.load(path)
            agreement[(backend, scheme)] = round(top1_agreement(reference, run_batched(run, tokens), photos), 4)
    return agreement


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


def measure_model(name: str, args, gops: float) -> tuple[list[dict], dict]:
    """Rows of every tower x runtime x scheme of `name` (timed in this run), and how many of its artifacts were
    exported in this run or reused from an earlier run's export in --work-dir (and, with --cached-only, which
    runtime/scheme pairs had no export to time)."""
    from mobileclip_deploy.hashing import sha256_path

    v = get_variant(name)
    model, ckpt = golden_model(name)
    out = args.work_dir / name
    wanted = PAIRS
    if args.cached_only:
        manifest = out / "manifest.json"
        done = {(e["tower"], e["backend"], e["scheme"])
                for e in (json.loads(manifest.read_text())["artifacts"] if manifest.is_file() else [])}
        wanted = [p for p in PAIRS if {("image", *p), ("text", *p)} <= done]
        if not wanted:
            raise RuntimeError(f"--cached-only: nothing exported in {out}")
    pairs = [(get_backend(b), get_backend(b).scheme(s)) for b, s in wanted]
    request = pipeline.ExportRequest(pairs=pairs, output_dir=out, calibration=args.calibration)
    print(f"{v.display_name}: exporting (cached in {out})", flush=True)
    torch.set_num_threads(os.cpu_count() or 1)  # searches and references: every core
    results = pipeline.run(request, model, v, sha256_path(ckpt))
    torch.set_num_threads(1)  # nothing of PyTorch's may spin beside the 1-thread timing below
    for r in results:
        if r.status == "failed":
            print(f"  not exported: {r.message[:300]}", flush=True)
    reused = sum(r.status == "cached" for r in results)
    exports = {"this_run": len(results) - reused, "reused": reused,
               "not_exported": [f"{b} {s}" for b, s in PAIRS if (b, s) not in wanted]}
    print(f"  {exports['this_run']} artifact(s) exported in this run, {reused} reused from {out}", flush=True)
    manifest = json.loads((out / "manifest.json").read_text())
    entries = {(e["tower"], e["backend"], e["scheme"]): e for e in manifest["artifacts"]}
    folded = reparameterize(model).eval()
    text_agreement = text_agreements(folded, v, request, out, entries)
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
                         "top1_agreement": p.get("zero_shot_top1_agreement") if tower == "image"
                         else text_agreement.get((backend, scheme)),
                         "kept_in_float": len(e["details"].get("kept_in_float", [])) if scheme != "fp32" else None})
            r = rows[-1]
            print(f"  {tower:5s} {backend:18s} {scheme:5s} {r['median_ms']:8.2f} ms  x fp32 {r['ratio_to_fp32']}  "
                  f"x int8 bound {r['ratio_to_int8_bound']}  cos {r['min_cosine']}  top-1 {r['top1_agreement']}",
                  flush=True)
    return rows, exports


def targets(rows: list[dict]) -> list[str]:
    """The int8 targets, checked on this run's rows: S0's image tower int8 at most TARGET_RATIO x fp32 while
    faithful (cosine, top-1 agreement) in at least one runtime, and every int8 tower faster than its fp32 form."""
    int8 = [r for r in rows if r["scheme"] != "fp32" and r["ratio_to_fp32"] is not None]
    faithful = [r for r in int8 if r["model"] == "MobileCLIP-S0" and r["tower"] == "image"
                and (r["min_cosine"] or 0) >= TARGET_COS and (r["top1_agreement"] or 0) >= TARGET_AGREE]
    lines = []
    if faithful:
        best = min(faithful, key=lambda r: r["ratio_to_fp32"])
        verdict = "met" if best["ratio_to_fp32"] <= TARGET_RATIO else "not met"
        lines.append(f"- target S0 image int8 <= {TARGET_RATIO}x fp32 with min cos >= {TARGET_COS} and top-1 agreement "
                     f">= {TARGET_AGREE}: {verdict} (fastest such row: {best['backend']} {best['scheme']} "
                     f"{best['ratio_to_fp32']}x)")
    slower = [f"{r['model']} {r['tower']} {r['backend']} {r['scheme']} {r['ratio_to_fp32']}x" for r in int8
              if r["ratio_to_fp32"] >= 1]
    lines.append("- int8 rows not faster than fp32: " + (", ".join(slower) if slower else "none"))
    return lines


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
             f"- fp32 GEMM throughput (ONNX Runtime MatMul, 1 thread, 1024^3): {summary['fp32_gemm_gflops']} GFLOP/s; "
             f"fp32 / best int8 = {summary['fp32_gemm_gflops'] / max(summary['int8_gemm_gops'].values()):.2f}: "
             "the lowest int8 / fp32 latency ratio a tower whose time is all GEMM can reach on ONNX Runtime here",
             f"- ExecuTorch XNNPACK GEMM throughput (1 thread, 1024^3 Linear, fp32 and w8a8 exports): "
             f"{summary['xnnpack_gemm_gops']} G(FL)OP/s: where qs8 is no faster than f32, no choice of int8 layers "
             "makes an XNNPACK tower faster than fp32",
             "- weights: golden recipe; min cos on held-out ImageNet sample photos (image) and prompts (text); "
             "top-1 agree: zero-shot ImageNet class of the held-out photos (image), nearest held-out photo of "
             f"{TEXT_PROMPTS} held-out prompts (text)",
             "- artifacts exported in this run / reused from an earlier run's export in the work folder (same weights, "
             "options and package source; their searches and parity are that export's, every timing is this run's): "
             + ", ".join(f"{k} {e['this_run']} / {e['reused']}" for k, e in summary["exports"].items()), "",
             "| model | tower | runtime | scheme | median ms | x fp32 | x int8 bound | min cos | top-1 agree |"
             " float units |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in summary["rows"]:
        lines.append(f"| {r['model']} | {r['tower']} | {r['backend']} | {r['scheme']} | {r['median_ms']:.2f} | "
                     f"{r['ratio_to_fp32']} | {r['ratio_to_int8_bound']} | {r['min_cosine']} | "
                     f"{r['top1_agreement']} | {r['kept_in_float']} |")
    lines += [""] + targets(summary["rows"]) + [f"- not measured: {x}" for x in summary["not_measured"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mobileclip-s0,mobileclip-s2,mobileclip-b")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--calibration", type=Path, default=REPO.parent / "shared" / "data" / "imagenet-samples")
    ap.add_argument("--work-dir", type=Path, default=Path.home() / ".cache/mobileclip-deploy/int8_latency")
    ap.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--cached-only", action="store_true",
                    help="time only what an earlier run exported into --work-dir (both towers of a runtime and "
                         "scheme) and list the rest as not measured, instead of exporting it")
    args = ap.parse_args()
    torch.set_num_threads(1)  # measure_model lends PyTorch every core for the exports only
    load_start = os.getloadavg()[0]
    device = host_device()
    gemm = ort_gemm_gops()
    fp32_gemm = gemm.pop("MatMul f32")
    xnnpack = xnnpack_gemm_gops(args.work_dir / "gemm")
    print(f"host: {device['soc']} ({device['cpu_count']} cores, {', '.join(device['isa'])}); load {load_start:.2f}; "
          f"int8 GEMM {gemm} GOP/s; fp32 GEMM {fp32_gemm} GFLOP/s; XNNPACK {xnnpack} G(FL)OP/s", flush=True)
    summary = {"date": now_iso(), "rounds": args.rounds, "int8_gemm_gops": gemm, "fp32_gemm_gflops": fp32_gemm,
               "xnnpack_gemm_gops": xnnpack,
               "rows": [], "exports": {}, "not_measured": [],
               "machine": {"cpu": device["soc"], "cores": device["cpu_count"], "isa": device["isa"],
                           "os": device["os"]},
               "versions": {k: package_version(k) for k in ("torch", "onnxruntime", "executorch", "mobileclip-deploy")}}
    for name in args.models.split(","):
        try:
            rows, summary["exports"][name] = measure_model(name, args, max(gemm.values()))
            summary["rows"] += rows
            if summary["exports"][name]["not_exported"]:
                summary["not_measured"].append(f"{name}: " + ", ".join(summary["exports"][name]["not_exported"])
                                               + " (not exported before this --cached-only run)")
        except Exception as exc:  # noqa: BLE001 - record what finished, name what did not
            summary["not_measured"].append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
        summary["load_average"] = [load_start, os.getloadavg()[0]]
        write_text(args.results_dir / "int8_latency.json", json.dumps(summary, indent=1) + "\n", replace=True)
        write_text(args.results_dir / "int8_latency.md", markdown(summary), replace=True)
    print(f"wrote {args.results_dir / 'int8_latency.md'}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""LiteRT beside ONNX Runtime and ExecuTorch XNNPACK on this host: fp32 and int8 encoders at batch 1, 1 thread.

Per model and tower every path is exported from the same folded tower (golden-recipe weights, so parity means
something), checked against PyTorch on 8 photos / prompts, then timed in one interleaved run (rounds of one untimed
and a few timed calls of each path in turn, so machine load hits every path alike). Ratios: to the same runtime's
fp32 and to the tower's compute bound (its FLOPs / this CPU's best single-thread fp32 matmul throughput).
The LiteRT backend converts the tower after the ExecuTorch depthwise rewrite (exporters/xnnpack_depthwise.py); the
image towers also run `litert fp32 unsplit`, converted without it, to show what the rewrite buys. The LiteRT int8
files are derived from the fp32 file by ai-edge-quantizer, as the backend does (one conversion per tower).

    python benchmarks/litert_latency.py [--models mobileclip-s0,...] [--rounds 10]

Writes litert_latency.md and .json in --results-dir; exports are cached by name in --work-dir.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]

from goldens import golden_tensor
from host_latency import matmul_gflops

from mobileclip_deploy import create_model, reparameterize, runtimes
from mobileclip_deploy.atomic import write_text
from mobileclip_deploy.bench.stats import interleaved_medians
from mobileclip_deploy.exporters import calibration as calib
from mobileclip_deploy.exporters import executorch as et_exp
from mobileclip_deploy.exporters import onnx as onnx_exp
from mobileclip_deploy.exporters.backends import litert
from mobileclip_deploy.exporters.fold import fold_affine
from mobileclip_deploy.exporters.parity import compare
from mobileclip_deploy.exporters.wrappers import example_input, tower_module
from mobileclip_deploy.registry import get_variant
from mobileclip_deploy.tokenizer import tokenize

PATHS = [("onnxruntime", "fp32"), ("onnxruntime", "8da8w"), ("executorch", "fp32"), ("executorch", "8da8w"),
         ("litert", "fp32"), ("litert", "8da8w"), ("litert", "w8a8"), ("litert", "fp32 unsplit")]
SUFFIX = {"onnxruntime": ".onnx", "executorch": ".pte", "litert": ".tflite"}
BLOCK = 3
PHOTOS = Path(os.environ.get("MOBILECLIP_SHARED") or ROOT.parent / "shared") / "data" / "imagenet-samples"


def golden_model(name: str) -> torch.nn.Module:
    model = create_model(name)
    model.load_state_dict({k: golden_tensor(k, list(v.shape), str(v.dtype).removeprefix("torch."))
                           for k, v in model.state_dict().items()})
    return reparameterize(model.eval())


def tower_flops(module: torch.nn.Module, example: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(example)
    return float(counter.get_total_flops())


def inputs(tower: str, variant, photos: list[Path], offset: int) -> np.ndarray:
    if tower == "image":
        return calib.load_batch(photos[8 * offset:8 * offset + 8], variant.image_size, variant.interpolation)
    from mobileclip_deploy.exporters.context import _prompts

    return tokenize(_prompts(8, offset=500 * offset), variant.context_length).to(torch.int32).numpy()


def export(runtime: str, scheme: str, module, example, tower: str, path: Path, calibration: np.ndarray,
           variant) -> None:
    work = path.parent / f"{path.stem}.work"
    work.mkdir(exist_ok=True)
    if runtime == "onnxruntime":
        onnx_exp.export(module, example, tower, scheme, path, None, work)
    elif runtime == "executorch":
        et_exp.export(module, example, scheme, "xnnpack", path, None)
    elif scheme == "fp32 unsplit":
        litert.convert(module, example, tower, path, split=False)
    elif scheme == "fp32":
        litert.export(module, example, tower, scheme, path, work, {"variant": variant.name, "tower": tower})
    else:
        litert.quantize(path.with_name(f"{tower}_litert_fp32.tflite"), scheme, path, calibration, tower)


def runner(path: Path) -> runtimes.Runner:
    """The artifact on its runtime here (chosen by suffix), 1 thread: the same loader parity and bench use."""
    return runtimes.load(path, threads=1)


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mobileclip-s0")
    ap.add_argument("--towers", default="image,text")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--work-dir", type=Path, default=Path.home() / ".cache/mobileclip-deploy/litert_latency")
    ap.add_argument("--results-dir", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]
    gflops = matmul_gflops()
    photos = calib.list_images(PHOTOS)
    print(f"host: {cpu_name()}; single-thread fp32 matmul {gflops:.1f} GFLOP/s; load average {load_start:.2f}",
          flush=True)
    rows: list[dict[str, Any]] = []
    for name in args.models.split(","):
        variant = get_variant(name)
        folded = golden_model(name)
        for tower in args.towers.split(","):
            module = fold_affine(tower_module(folded, tower, variant.image_size, variant.context_length))
            example = example_input(tower, variant.image_size, variant.context_length)
            flops = tower_flops(module, example)
            bound_ms = flops / (gflops * 1e9) * 1e3
            x = inputs(tower, variant, photos, 0)
            calibration = np.concatenate([inputs(tower, variant, photos, 1), inputs(tower, variant, photos, 2)])
            with torch.no_grad():
                reference = np.concatenate([module(torch.from_numpy(x[i:i + 1])).numpy() for i in range(len(x))])
            runs, facts = {}, {}
            for runtime, scheme in PATHS:
                if scheme == "fp32 unsplit" and tower != "image":
                    continue
                label = f"{runtime} {scheme}"
                path = args.work_dir / name / f"{tower}_{runtime}_{scheme.replace(' ', '_')}{SUFFIX[runtime]}"
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    t0 = time.perf_counter()
                    export(runtime, scheme, module, example, tower, path, calibration, variant)
                    print(f"{name} {tower} {label}: exported in {time.perf_counter() - t0:.0f} s", flush=True)
                run = runner(path)
                out = np.concatenate([np.asarray(run(x[i:i + 1])) for i in range(len(x))])
                facts[label] = {**compare(reference, out), "mb": path.stat().st_size / 1e6,
                                **({k: run.info[k] for k in ("xnnpack_partitions", "reference_kernel_ops")}
                                   if runtime == "litert" else {})}
                first = x[:1]
                runs[label] = lambda run=run, first=first: run(first)
            medians = interleaved_medians(runs, args.rounds, BLOCK)
            for label, ms in medians.items():
                runtime = label.split()[0]
                row = {"model": name, "tower": tower, "path": label, "median_ms": ms,
                       "x_fp32": ms / medians[f"{runtime} fp32"], "x_bound": ms / bound_ms, "bound_ms": bound_ms,
                       "x_onnxruntime_fp32": ms / medians["onnxruntime fp32"], **facts[label]}
                rows.append(row)
                print(f"{name} {tower:5s} {label:22s} {ms:8.2f} ms  x{row['x_fp32']:.2f} fp32  "
                      f"x{row['x_bound']:.2f} bound  x{row['x_onnxruntime_fp32']:.2f} ORT fp32  "
                      f"cos {row['min_cosine']:.6f}  {row['mb']:.1f} MB", flush=True)
    summary = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu": cpu_name(),
               "cores": os.cpu_count(), "matmul_gflops": gflops, "threads": 1, "rounds": args.rounds, "block": BLOCK,
               "load_average": [load_start, os.getloadavg()[0]], "rows": rows}
    out = args.results_dir
    write_text(out / "litert_latency.json", json.dumps(summary, indent=1) + "\n", replace=True)
    write_text(out / "litert_latency.md", markdown(summary), replace=True)
    print(f"wrote {out / 'litert_latency.md'}")


def markdown(summary: dict[str, Any]) -> str:
    lines = ["# LiteRT vs ONNX Runtime vs ExecuTorch XNNPACK (benchmarks/litert_latency.py)", "",
             (f"- machine: {summary['cpu']} ({summary['cores']} cores), single-thread fp32 matmul "
              f"{summary['matmul_gflops']:.1f} GFLOP/s; load average at start / end "
              f"{summary['load_average'][0]:.2f} / {summary['load_average'][1]:.2f}"),
             (f"- {summary['date']}; 1 thread; batch 1; interleaved: {summary['rounds']} rounds x (1 untimed + "
              f"{summary['block']} timed) calls per path; golden-recipe weights; parity on 8 photos / prompts vs the "
              "folded PyTorch tower"), "",
             ("| model | tower | path | median ms | x own fp32 | x compute bound | x ORT fp32 | min cos | max abs err "
              "| MB | XNNPACK partitions / ops left to reference kernels |"),
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in summary["rows"]:
        left = ", ".join(f"{k} {v}" for k, v in (r.get("reference_kernel_ops") or {}).items()) or "none"
        lt = f"{r['xnnpack_partitions']} / {left}" if "xnnpack_partitions" in r else "-"
        lines.append(f"| {r['model']} | {r['tower']} | {r['path']} | {r['median_ms']:.2f} | {r['x_fp32']:.2f} | "
                     f"{r['x_bound']:.2f} | {r['x_onnxruntime_fp32']:.2f} | {r['min_cosine']:.6f} | "
                     f"{r['max_abs_error']:.2g} | {r['mb']:.1f} | {lt} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

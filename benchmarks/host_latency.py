#!/usr/bin/env python3
"""Host latency of S0, S2 and B encoders at batch 1: eager train-time and folded PyTorch, ONNX Runtime fp32/int8
and ExecuTorch XNNPACK fp32/int8, with ratios to eager train-time, and S0's image encoder against its compute
bound (FLOPs / this CPU's measured single-thread fp32 matmul throughput).

Targets (issue 4): at 1 thread, every exported fp32 path of S0's image encoder >= 2x faster than eager
train-time PyTorch, and within 1.3x of the compute bound.

    python benchmarks/host_latency.py [--threads 1] [--iterations 30] [--models mobileclip-s0,...]

Records (schema mobileclip-deploy/bench-record/v1) are appended to benchmarks/results/host.jsonl.
Exported artifacts are cached (keyed by options and tool versions) in --work-dir.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mobileclip_deploy import create_model, reparameterize
from mobileclip_deploy.bench.host import eager_loader, host_device, loader_for, measure
from mobileclip_deploy.bench.records import append_records, make_record
from mobileclip_deploy.bench.sweep import SweepConfig, build_artifacts
from mobileclip_deploy.registry import get_variant

PATHS = [("pytorch", "train-time"), ("pytorch", "folded"), ("onnx", "fp32"), ("onnx", "8da8w"),
         ("executorch-xnnpack", "fp32"), ("executorch-xnnpack", "8da8w")]


def matmul_gflops(seconds: float = 2.0, n: int = 1024) -> float:
    """Best single-thread fp32 GEMM throughput (GFLOP/s) over repeated n x n products."""
    torch.set_num_threads(1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def image_flops(name: str) -> float:
    """FLOPs (multiply-add = 2) of the folded image encoder at batch 1, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    v = get_variant(name)
    model = reparameterize(create_model(v.name))
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.encode_image(torch.rand(1, 3, v.image_size, v.image_size))
    return float(counter.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mobileclip-s0,mobileclip-s2,mobileclip-b")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--work-dir", type=Path, default=Path.home() / ".cache/mobileclip-deploy/host_latency")
    ap.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "host.jsonl")
    args = ap.parse_args()

    device = host_device()
    print(f"host: {device['soc']} ({device['cpu_count']} cores, {', '.join(device['isa'])}), {device['os']}")
    print(f"torch {torch.__version__}; {args.threads} thread(s); batch 1; median of {args.iterations} "
          f"after {args.warmup} warm-up\n")
    cfg = SweepConfig(tuple(args.models.split(",")), tuple(p for p in PATHS if p[0] != "pytorch"), args.work_dir,
                      {}, args.threads, args.warmup, args.iterations)
    records = []
    rows = []
    for name in cfg.variants:
        v = get_variant(name)
        arts = {(a.tower, a.backend, a.scheme): a for a in build_artifacts(cfg, v.name, print)}
        for tower in ("image", "text"):
            base = None
            for backend, scheme in PATHS:
                if backend == "pytorch":
                    def build(form: str = scheme, n: str = v.name):
                        m = create_model(n)
                        return reparameterize(m) if form == "folded" else m

                    load, runtime = eager_loader(build, tower, v.image_size, args.threads)
                    info = {"file": f"{v.name} eager {scheme} ({tower})", "sha256": None, "model": v.name,
                            "tower": tower, "backend": "pytorch", "scheme": "fp32"}
                    extra = {"variant": scheme}
                else:
                    art = arts[(tower, backend, scheme)]
                    load, runtime = loader_for(art, args.threads)
                    info, extra = art.info(), {}
                m = measure(load, args.warmup, args.iterations)
                rec = make_record(target="host", device=device, runtime=runtime, artifact=info, measurement=m,
                                  threads=args.threads,
                                  extra={**extra, "random_weights": True, "source": "benchmarks/host_latency.py"})
                records.append(rec)
                med = rec["latency_ms"]["median"]
                base = base or med
                rows.append((v.display_name, tower, f"{backend} {scheme}", med, rec["latency_ms"]["p90"], base / med))
                print(f"{v.display_name:14s} {tower:5s} {backend + ' ' + scheme:26s} median {med:8.2f} ms  "
                      f"p90 {rec['latency_ms']['p90']:8.2f}  x{base / med:5.2f} vs eager train-time", flush=True)
        print()
    append_records(args.output, records)

    gflops = matmul_gflops()
    flops = image_flops("mobileclip-s0")
    bound_ms = flops / (gflops * 1e9) * 1e3
    print(f"S0 image encoder: {flops / 1e9:.2f} GFLOP; single-thread matmul {gflops:.1f} GFLOP/s "
          f"-> compute bound {bound_ms:.2f} ms")
    s0 = [r for r in rows if r[0] == "MobileCLIP-S0" and r[1] == "image"]
    for _, _, path, med, _, ratio in s0:
        if path.endswith("fp32") and not path.startswith("pytorch"):
            ok_speed = "OK" if ratio >= 2.0 else "MISSED"
            ok_bound = "OK" if med <= 1.3 * bound_ms else "MISSED"
            print(f"  {path:26s} {med:7.2f} ms = {med / bound_ms:4.2f}x bound [{ok_bound} <=1.3x], "
                  f"{ratio:4.2f}x faster than eager train-time [{ok_speed} >=2x]")
    print(f"\n{len(records)} records appended to {args.output}")


if __name__ == "__main__":
    main()

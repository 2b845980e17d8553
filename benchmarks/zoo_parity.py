#!/usr/bin/env python3
"""Every zoo variant through every backend at fp32 and fp16, on synthetic weights, judged by the parity gate.

    nice -n 10 python benchmarks/zoo_parity.py [--variants mobileclip-s0,...] [--backends onnx,...] [--resume]

Both towers of each variant (smallest first) are exported with the real pipeline (fold, export, gate, manifest)
into a fresh temporary folder, with the synthetic weights `--random-weights` uses (models/synthetic.py; not a
trained model). Parity runs on 8 ImageNet photos (../shared/data/imagenet-samples) and 8 prompts. Per artifact it
records export time, size, every gate metric, the decisive one and any failure; per variant and tower the pairwise
cosine range of the reference embeddings (how far apart the synthetic weights put different inputs). Results go to
benchmarks/results/zoo_parity.{json,md}, rewritten after every backend of a variant, so an interrupted run keeps
what finished; `--resume` skips the (variant, backend) pairs already there.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mobileclip_deploy import create_model, reparameterize
from mobileclip_deploy.atomic import write_text
from mobileclip_deploy.bench.host import host_device
from mobileclip_deploy.exporters import manifest, pipeline
from mobileclip_deploy.exporters.backends import all_backends
from mobileclip_deploy.models.synthetic import RECIPE
from mobileclip_deploy.registry import VARIANTS, get_variant

REPO = Path(__file__).resolve().parents[1]
PHOTOS = Path(os.environ.get("MOBILECLIP_SHARED") or REPO.parent / "shared") / "data" / "imagenet-samples"
RESULTS = REPO / "benchmarks" / "results"
# Smallest first, so a run cut short has covered every architecture it could.
ORDER = ("mobileclip-s0", "mobileclip2-s0", "mobileclip-s1", "mobileclip-s2", "mobileclip2-s2", "mobileclip-b",
         "mobileclip-b-lt", "mobileclip2-b", "mobileclip2-s3", "mobileclip2-s4", "mobileclip2-l-14")
METRICS = ("spread", "min_cosine", "centered_cosine", "psnr_db", "max_abs_error", "top1_agreement",
           "rank_correlation", "decisive", "passed", "message", "check")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(ORDER), help="comma-separated registry names")
    parser.add_argument("--backends", default=",".join(all_backends()), help="comma-separated backend names")
    parser.add_argument("--schemes", default="fp32,fp16")
    parser.add_argument("--seed", type=int, default=0, help="synthetic weight seed")
    parser.add_argument("--resume", action="store_true", help="keep the variants already in the results")
    parser.add_argument("--out", type=Path, default=RESULTS / "zoo_parity")
    return parser.parse_args()


def pairwise_range(embeddings: np.ndarray) -> list[float]:
    """[min, max] cosine between different inputs' embeddings."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cos = (unit @ unit.T)[np.triu_indices(len(unit), 1)]
    return [round(float(cos.min()), 4), round(float(cos.max()), 4)]


def run_variant(name: str, backends: list[str], schemes: list[str], seed: int) -> dict:
    variant = get_variant(name)
    pairs = [(all_backends()[b], all_backends()[b].scheme(s)) for b in backends for s in schemes
             if s in all_backends()[b].scheme_names]
    model = create_model(name, synthetic_seed=seed)
    with tempfile.TemporaryDirectory(prefix="zoo_parity.") as tmp:
        request = pipeline.ExportRequest(pairs=pairs, output_dir=Path(tmp) / "out", calibration=PHOTOS,
                                         calibration_limit=8)
        ctx = pipeline.context(reparameterize(model).eval(), variant, request)
        spread = {t: pairwise_range(ctx.reference(t)) for t in ("image", "text")}
        start = time.perf_counter()
        results = pipeline.run(request, model, variant, None)
        seconds = time.perf_counter() - start
        written = manifest.load(request.output_dir) or {"artifacts": []}
    details = {a["file"]: a.get("details") or {} for a in written["artifacts"]}
    rows = [{"file": r.file, "tower": r.tower, "backend": r.backend, "scheme": r.scheme, "status": r.status,
             "seconds": round(r.seconds, 1), "size_bytes": r.size_bytes,
             **{k: (r.parity or {}).get(k) for k in METRICS}, "failure": r.message if r.status == "failed" else "",
             "kept_fp32": details.get(r.file, {}).get("kept_fp32", [])}
            for r in results]
    return {"variant": name, "weights": f"synthetic:{RECIPE}:{seed}", "pairwise_cosine": spread,
            "seconds": round(seconds, 1), "artifacts": rows}


def markdown(runs: list[dict], missing: list[str], machine: str) -> str:
    lines = ["# Every zoo variant through every backend (synthetic weights; not a trained model)", "",
             ("Written by `benchmarks/zoo_parity.py`. Parity: the gate of `mobileclip_deploy/verify/gate.py` on 8 "
              "ImageNet photos and 8 prompts. `pairwise cos` is the range of cosines between different inputs' "
              "reference embeddings (default-init weights: >= 0.999). Seconds are wall time on a shared host, "
              "export and check together."), "", f"Machine: {machine}.", ""]
    for run in runs:
        pc = run["pairwise_cosine"]
        lines += [f"## {run['variant']} ({run['weights']}, {run['seconds']} s)", "",
                  f"pairwise cos: image {pc['image'][0]}..{pc['image'][1]}, text {pc['text'][0]}..{pc['text'][1]}",
                  "", "| artifact | s | MB | min cos | centered cos | PSNR dB | top-1 | rank corr | decisive | status |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for a in run["artifacts"]:
            def num(key: str, fmt: str = "{:.6f}", a: dict = a) -> str:
                return "-" if a.get(key) is None else fmt.format(a[key])
            verdict = {True: "passed", False: "FAILED", None: "not assessable"}.get(a["passed"], "")
            status = a["status"] if a["status"] != "ok" else verdict
            mb = "-" if a["size_bytes"] is None else f"{a['size_bytes'] / 1e6:.1f}"
            lines.append(f"| {a['file']} | {a['seconds']} | {mb} | {num('min_cosine')} | {num('centered_cosine')} | "
                         f"{num('psnr_db', '{:.1f}')} | {num('top1_agreement', '{:.3f}')} | "
                         f"{num('rank_correlation', '{:.4f}')} | {a.get('decisive') or '-'} | {status} |")
        repaired = [a for a in run["artifacts"] if a.get("kept_fp32")]
        if repaired:
            lines += ["", "Core AI fp16 precision repair (modules computed in fp32 inside the fp16 program):", ""]
            lines += [f"- {a['file']}: {len(a['kept_fp32'])} ({', '.join(a['kept_fp32'])})" for a in repaired]
        failures = [a for a in run["artifacts"] if a["failure"]]
        if failures:
            lines += ["", "Failures:", ""] + [f"- {a['failure']}" for a in failures]
        lines.append("")
    if missing:
        lines += ["## Not run", "", f"Not reached in this run: {', '.join(missing)}.", ""]
    return "\n".join(lines)


def merge(runs: list[dict], new: dict) -> None:
    """Add one backend's rows to its variant's run (a variant's backends run one at a time, so an interrupted run
    keeps every backend that finished)."""
    for run in runs:
        if run["variant"] == new["variant"]:
            run["artifacts"] += new["artifacts"]
            run["seconds"] = round(run["seconds"] + new["seconds"], 1)
            return
    runs.append(new)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    names = [get_variant(n).name for n in args.variants.split(",")]
    assert set(names) <= {v.name for v in VARIANTS}, "zoo variants only"
    json_path, md_path = args.out.with_suffix(".json"), args.out.with_suffix(".md")
    runs = json.loads(json_path.read_text())["runs"] if args.resume and json_path.exists() else []
    device = host_device()
    machine = f"{device['soc']} ({', '.join(device['isa'])}), {device['cpu_count']} cores"
    for name in names:
        done = {a["backend"] for r in runs if r["variant"] == name for a in r["artifacts"]}
        for backend in [b for b in args.backends.split(",") if b not in done]:
            print(f"{name}: exporting {backend}", flush=True)
            merge(runs, run_variant(name, [backend], args.schemes.split(","), args.seed))
            missing = [n for n in names if n not in {r["variant"] for r in runs}]
            write_text(json_path, json.dumps({"machine": machine, "runs": runs, "not_run": missing}, indent=2) + "\n",
                       replace=True)
            write_text(md_path, markdown(runs, missing, machine), replace=True)
            print(f"{name}: {backend} done", flush=True)


if __name__ == "__main__":
    main()

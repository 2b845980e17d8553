#!/usr/bin/env python3
"""What the Core ML parity check costs: S0's fp32, fp16 and pal4 programs executed op by op on 16 inputs per tower.

Exports both towers of MobileCLIP-S0 (synthetic weights, `--random-weights`'s) to Core ML at fp32, fp16 and pal4
without the check, then times what the check does for each artifact (runtimes/coreml_program.py: load the saved
program, decode its compressed weights once, run every op in order; fp16 programs under both arithmetic models) on
16 photos / prompts, and compares the outputs with the folded PyTorch tower. Prints a Markdown table and the total.

    python benchmarks/coreml_program_cost.py [--inputs 16] [--out benchmarks/results/amd-epyc-avx2/coreml_program_cost.md]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from mobileclip_deploy import create_model, reparameterize
from mobileclip_deploy.atomic import write_text
from mobileclip_deploy.bench.host import host_device
from mobileclip_deploy.exporters import calibration as calib
from mobileclip_deploy.exporters import coreml as coreml_exp
from mobileclip_deploy.exporters import pipeline
from mobileclip_deploy.exporters.backends import all_backends
from mobileclip_deploy.exporters.context import _prompts
from mobileclip_deploy.exporters.parity import compare
from mobileclip_deploy.registry import get_variant
from mobileclip_deploy.tokenizer import tokenize

REPO = Path(__file__).resolve().parents[1]
PHOTOS = Path(os.environ.get("MOBILECLIP_SHARED") or REPO.parent / "shared") / "data" / "imagenet-samples"
SCHEMES = ("fp32", "fp16", "pal4")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=16)
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    variant = get_variant("mobileclip-s0")
    model = create_model(variant.name, synthetic_seed=0)
    folded = reparameterize(model).eval()
    inputs = {"image": calib.load_batch(calib.list_images(PHOTOS)[: args.inputs], variant.image_size,
                                        variant.interpolation),
              "text": tokenize(_prompts(args.inputs), variant.context_length).to(torch.int32).numpy()}
    coreml = all_backends()["coreml"]
    rows, load = [], [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="coreml_cost.") as tmp:
        request = pipeline.ExportRequest(pairs=[(coreml, coreml.scheme(s)) for s in SCHEMES],
                                         output_dir=Path(tmp) / "out", parity=False)
        ctx = pipeline.context(folded, variant, request)
        results = pipeline.run(request, model, variant, None, Console(stderr=True))
        for result in results:
            tower = result.tower
            with torch.no_grad():
                reference = ctx.export_towers[tower](torch.from_numpy(inputs[tower])).numpy()
            start = time.perf_counter()
            out, facts = coreml_exp.program_outputs(Path(tmp) / "out" / result.file, tower, inputs[tower])
            seconds = time.perf_counter() - start
            rows.append({"file": result.file, "seconds": seconds, "per_input": seconds / len(out),
                         "min_cosine": compare(reference, out)["min_cosine"],
                         "native_min_cosine": facts.get("native_min_cosine")})
            print(f"{result.file}: {seconds:.1f} s", flush=True)
    load.append(os.getloadavg()[0])
    device = host_device()
    total = sum(r["seconds"] for r in rows)
    lines = ["# Core ML parity cost: S0's programs executed op by op (benchmarks/coreml_program_cost.py)", "",
             f"- machine: {device['soc']} ({', '.join(device['isa'])}), {device['cpu_count']} cores, 1 torch thread; "
             f"load average {load[0]:.1f} at start, {load[1]:.1f} at end (shared host)",
             f"- {args.inputs} inputs per tower (ImageNet photos / prompts), synthetic weights; time = load the "
             "program, decode its weights, run every op (fp16 programs: fp16 storage on every input, native fp16 on the first 2)", "",
             "| artifact | seconds | per input | min cos vs PyTorch | native fp16 min cos |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        native = "-" if r["native_min_cosine"] is None else f"{r['native_min_cosine']:.6f}"
        lines.append(f"| {r['file']} | {r['seconds']:.1f} | {r['per_input']:.2f} | {r['min_cosine']:.6f} | {native} |")
    lines += ["", f"Total: {total:.0f} s ({total / 60:.1f} min) for {len(rows)} artifacts."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_text(args.out, text, replace=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Prompts per second of `eval`'s text side: the old eager path against the new ones (issue 31, section 5).

    python benchmarks/eval_text_speed.py [--models mobileclip-s0] [--prompts 2000] [--rounds 4] [--work DIR]

- old eager: what `eval` did before: prompts in class order, batches of 32, every prompt padded to 77 tokens,
  torch's default thread count;
- new eager: `bench.evaluate`'s path: batches of 256, longest prompts first, a causal tower cut after its longest
  prompt, all cores (`torch_encoders`, `class_text_embeddings`, `torch_threads(all_cores())`);
- new onnx: the exported fp32 ONNX text tower as `eval --artifacts` runs it (ONNX Runtime on all cores, one row at
  a time), exported here into --work first (export time not counted).

The first --prompts prompts of the 1000 classes x 80 OpenAI templates, on synthetic weights (`--random-weights`:
speed does not depend on the values, and the classifiers' agreement is measured on weights whose prompts embed
apart). The prompts are split into --rounds rounds and the paths alternate within each round, so load from other
processes on a shared machine hits all of them alike; the ratio is of the summed times of one run. `min cos` is the
smallest cosine between a class's classifier row from that path and from the old one (the tests require > 0.9999).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from mobileclip_deploy import create_model, reparameterize
from mobileclip_deploy.bench import evaluate as ev
from mobileclip_deploy.models.synthetic import RECIPE
from mobileclip_deploy.registry import get_variant
from mobileclip_deploy.tokenizer import tokenize
from mobileclip_deploy.zeroshot import class_text_embeddings, imagenet_classnames, openai_templates

OLD_BATCH = 32


def cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                    platform.machine())


def old_eager(model: torch.nn.Module, classes: list[str], templates: list[str]) -> torch.Tensor:
    """The text side before this change (zeroshot.class_text_embeddings at eval's default batch of 32)."""
    prompts = [t.replace("{}", c) for c in classes for t in templates]
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(prompts), OLD_BATCH):
            chunks.append(F.normalize(model.encode_text(tokenize(prompts[start:start + OLD_BATCH])).float(), dim=-1))
    return F.normalize(torch.cat(chunks).reshape(len(classes), len(templates), -1).mean(dim=1), dim=-1)


def new_path(text_fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[list[str], list[str]], torch.Tensor]:
    def run(classes: list[str], templates: list[str]) -> torch.Tensor:
        with ev.torch_threads(ev.all_cores()):
            return class_text_embeddings(text_fn, classes, templates, ev.TEXT_BATCH)
    return run


def onnx_text(model: torch.nn.Module, name: str, work: Path) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    from rich.console import Console

    from mobileclip_deploy.exporters import pipeline
    from mobileclip_deploy.exporters.backends import resolve_pairs

    folder = work / name
    started = time.perf_counter()
    request = pipeline.ExportRequest(pairs=resolve_pairs([], ["onnx:fp32"]), output_dir=folder, towers=("text",))
    weights = f"synthetic:{RECIPE}:0"  # stands in for a checkpoint sha256, so a second run reuses the export
    [result] = pipeline.run(request, model, get_variant(name), weights, Console(quiet=True))
    note = f"{result.status} in {time.perf_counter() - started:.0f} s"
    return ev.artifact_encoder(folder / f"{name}_text_onnx_fp32.onnx", "onnx"), note


def measure(name: str, prompts: int, rounds: int, work: Path) -> list[str]:
    templates = openai_templates()
    classes = imagenet_classnames()[: -(-prompts // len(templates))]
    model = reparameterize(create_model(name, synthetic_seed=0)).eval()
    onnx_fn, export_note = onnx_text(model, name, work)
    paths = {"old eager": lambda c, t: old_eager(model, c, t),
             "new eager": new_path(ev.torch_encoders(model)[1]),
             "new onnx": new_path(onnx_fn)}
    tokenize([t.replace("{}", c) for c in classes for t in templates])  # warm the tokenizer's cache for all alike
    seconds = dict.fromkeys(paths, 0.0)
    rows: dict[str, list[torch.Tensor]] = {p: [] for p in paths}
    step = -(-len(classes) // rounds)
    for start in range(0, len(classes), step):
        for path, run in paths.items():
            t = time.perf_counter()
            rows[path].append(run(classes[start:start + step], templates))
            seconds[path] += time.perf_counter() - t
    old = torch.cat(rows["old eager"])
    n = len(classes) * len(templates)
    out = [f"### {get_variant(name).display_name} ({'causal' if model.text.cfg.causal else 'bidirectional'} text "
           f"tower): {n:,} prompts ({len(classes)} classes x {len(templates)} templates), {rounds} rounds; ONNX "
           f"export {export_note}", "",
           "| path | seconds | prompts/s | x old eager | min cos vs old |", "|---|---:|---:|---:|---:|"]
    for path in paths:
        cos = F.cosine_similarity(torch.cat(rows[path]), old, dim=-1).min().item()
        out.append(f"| {path} | {seconds[path]:.1f} | {n / seconds[path]:.1f} | "
                   f"{seconds['old eager'] / seconds[path]:.2f} | {cos:.7f} |")
    return out + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mobileclip-s0")
    parser.add_argument("--prompts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path("/tmp/eval_text_speed"))
    args = parser.parse_args()
    load = os.getloadavg()[0]
    lines = ["# eval text side: prompts/s, old eager vs new (benchmarks/eval_text_speed.py)", "",
             f"- machine: {cpu_model()} ({os.cpu_count()} cores), {platform.platform()}",
             f"- torch {torch.__version__}; torch threads: default {torch.get_num_threads()} (old eager), all cores "
             f"{ev.all_cores()} (new); date {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
             f"- load average (1 min) at start: {load:.2f}", ""]
    print("\n".join(lines), flush=True)
    for name in args.models.split(","):
        print("\n".join(measure(name.strip(), args.prompts, args.rounds, args.work)), flush=True)
    print(f"- load average (1 min) at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

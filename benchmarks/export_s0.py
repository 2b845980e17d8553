#!/usr/bin/env python3
"""Export time and artifact size of MobileCLIP-S0, image and text, for every format and scheme, in one run.

    python benchmarks/export_s0.py --checkpoint mobileclip_s0.pt [--calibration DIR] [--out DIR]
    python benchmarks/export_s0.py --random-weights            # sizes and times only; parity is meaningless

Runs the real export pipeline (fold, export, parity check, manifest) into a fresh folder, so nothing is cached,
and prints one row per artifact: export seconds (conversion and quantization only), total seconds (with the
parity check), size, min cosine to the folded PyTorch model and status. Static schemes calibrate on
--calibration (default ../shared/data/imagenet-samples). `--markdown FILE` also writes the table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mobileclip_deploy import create_model
from mobileclip_deploy.atomic import write_text
from mobileclip_deploy.exporters import pipeline
from mobileclip_deploy.exporters.backends import all_backends
from mobileclip_deploy.hashing import sha256_path
from mobileclip_deploy.registry import get_variant

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CALIBRATION = REPO.parent / "shared" / "data" / "imagenet-samples"
COLUMNS = ("artifact", "export s", "total s", "size MB", "min cosine", "status")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", type=Path, help="official MobileCLIP-S0 checkpoint (real or golden)")
    weights.add_argument("--random-weights", action="store_true", help="random weights: times and sizes only")
    parser.add_argument("--calibration", type=Path, default=DEFAULT_CALIBRATION, help="photos for w8a8 and parity")
    parser.add_argument("--calibration-limit", type=int, default=16)
    parser.add_argument("--out", type=Path, help="keep the artifacts here (default: a temporary folder)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    console = Console()
    variant = get_variant("mobileclip-s0")
    pairs = [(backend, scheme) for backend in all_backends().values() for scheme in backend.schemes]
    with tempfile.TemporaryDirectory(prefix="export_s0.") as tmp:
        out = args.out or Path(tmp)
        if (out / "manifest.json").exists():
            raise SystemExit(f"{out} already holds an export; give an empty folder so nothing is cached")
        request = pipeline.ExportRequest(pairs=pairs, output_dir=out, calibration=args.calibration,
                                         calibration_limit=args.calibration_limit, options={"ort": True})
        model = create_model(variant.name, args.checkpoint)
        start = time.perf_counter()
        results = pipeline.run(request, model, variant, sha256_path(args.checkpoint) if args.checkpoint else None,
                               console)
        wall = time.perf_counter() - start
        manifest = json.loads((out / "manifest.json").read_text())
    export_seconds = {e["file"]: e["export_seconds"] for e in manifest["artifacts"]}
    rows = []
    for r in results:
        cosine = r.parity.get("min_cosine") if r.parity else None
        rows.append((r.file, f"{export_seconds.get(r.file, float('nan')):.1f}", f"{r.seconds:.1f}",
                     "-" if r.size_bytes is None else f"{r.size_bytes / 1e6:.1f}",
                     "-" if cosine is None else f"{cosine:.6f}", r.status))
    weights = "random weights" if args.random_weights else f"checkpoint {args.checkpoint.name}"
    title = f"MobileCLIP-S0 export ({weights}; {wall / 60:.1f} min wall for {len(results)} artifacts)"
    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "artifact" else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for r in results:
        if r.status == "failed":
            console.print(f"[red]{r.message}[/]")
    if args.markdown:
        lines = [f"# {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        write_text(args.markdown, "\n".join(lines) + "\n", replace=True)


if __name__ == "__main__":
    main()

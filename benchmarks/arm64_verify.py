"""arm64 parity of every ExecuTorch XNNPACK and ONNX artifact of one or more exports, per emulated CPU model.

Runs `mobileclip-deploy verify --arch arm64` on each EXPORT=CHECKPOINT pair (unless --report-only), then prints
a Markdown table from the manifests: host parity beside arm64 parity, and the kernel families that ran. The
emulated seconds are the check's cost, never a latency.

    python benchmarks/arm64_verify.py --export out/s0=mobileclip_s0.pt --export out/s2=mobileclip_s2.pt \
        --calibration ../shared/data/imagenet-samples --samples 1 > benchmarks/results/arm64_verify.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def _families(record: dict) -> str:
    evidence = record.get("evidence") or {}
    families = evidence.get("kernel_families", "-")
    if isinstance(families, list):
        return "; ".join(f"`{f}`" for f in families) or "-"
    return "not observable (ORT)" if "not observable" in str(families) else str(families)


def report(folders: list[Path]) -> str:
    lines = ["| artifact | host cos (x86) | CPU model | arm64 min cos | threshold | max abs err | result | "
             "kernel families (ETDump) | check cost (emulated s) |", "|---" * 9 + "|"]
    for folder in folders:
        manifest = json.loads((folder / "manifest.json").read_text())
        for entry in manifest["artifacts"]:
            host = entry.get("parity") or {}
            for cpu, r in sorted((entry.get("arm64") or {}).items()):
                cos = f"{r['min_cosine']:.6f}" if "min_cosine" in r else "-"
                err = f"{r['max_abs_error']:.3g}" if "max_abs_error" in r else "-"
                result = "ok" if r.get("passed") else f"FAILED {r.get('error', '')[:60]}"
                lines.append(f"| {entry['file']} | {host.get('min_cosine', float('nan')):.6f} | {cpu} | {cos} | "
                             f"{r.get('threshold', '-')} | {err} | {result} | {_families(r)} | "
                             f"{r.get('check_cost_emulated_s', '-')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", action="append", required=True, help="EXPORT_DIR=CHECKPOINT (repeatable)")
    parser.add_argument("--calibration", help="the exports' --calibration folder")
    parser.add_argument("--cpu", default=None, help="CPU models (default cortex-a53,cortex-a76)")
    parser.add_argument("--samples", type=int, default=1, help="parity inputs per artifact (1)")
    parser.add_argument("--report-only", action="store_true", help="only print what the manifests hold")
    args = parser.parse_args()
    folders = []
    for pair in args.export:
        folder, _, checkpoint = pair.partition("=")
        folders.append(Path(folder))
        if args.report_only:
            continue
        cmd = [sys.executable, "-m", "mobileclip_deploy", "verify", folder, "--arch", "arm64", "-c", checkpoint,
               "--samples", str(args.samples)]
        cmd += ["--calibration", args.calibration] if args.calibration else []
        cmd += ["--cpu", args.cpu] if args.cpu else []
        subprocess.run(cmd, stdout=sys.stderr, check=False)  # a failing artifact is a result, not a crash
    print(report(folders))


if __name__ == "__main__":
    main()

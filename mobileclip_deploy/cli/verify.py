"""`mobileclip-deploy verify`: check an export's Android artifacts on ARM64 kernels (qemu-user emulation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mobileclip_deploy.cli.app import app, console, err_console, print_json
from mobileclip_deploy.cli.options import CheckpointOpt, JsonOpt
from mobileclip_deploy.errors import UserError

CpuOpt = Annotated[str | None, typer.Option(
    "--cpu", help="Comma-separated CPU models: cortex-a53 (plain NEON), cortex-a76 (int8 dot product), max-i8mm "
                  "(i8mm, SVE2; SME off). Default: cortex-a53,cortex-a76.")]
CacheOpt = Annotated[Path | None, typer.Option(
    help="Folder for the arm64 sysroot and wheels (default $MOBILECLIP_ARM64_CACHE or "
         "$XDG_CACHE_HOME/mobileclip-deploy/arm64).")]
SamplesOpt = Annotated[int, typer.Option(
    min=1, help="Parity inputs per artifact (the first N of the export's own); each costs seconds to minutes emulated.")]


@app.command("verify")
def verify(
    export_dir: Annotated[Path, typer.Argument(help="An export folder (with manifest.json).")],
    arch: Annotated[str, typer.Option(help="Architecture to check on; arm64 is the one supported.")] = "arm64",
    cpu: CpuOpt = None,
    checkpoint: CheckpointOpt = None,
    calibration: Annotated[Path | None, typer.Option(
        help="The export's --calibration folder, when its parity used photos from it.")] = None,
    calibration_limit: Annotated[int, typer.Option(min=1, help="The export's --calibration-limit.")] = 16,
    samples: SamplesOpt = 2,
    backend: Annotated[list[str] | None, typer.Option(
        help="Only these backends' artifacts (repeatable). The first ONNX Runtime check prepares ~0.5 GB (Debian "
             "sysroot + aarch64 wheel); ExecuTorch needs ~4.5 GB more (its aarch64 Python runtime needs the CUDA "
             "build of torch).")] = None,
    cache: CacheOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run every Android artifact of EXPORT_DIR (ExecuTorch XNNPACK, ONNX, LiteRT) on emulated ARM64 CPUs and check its parity.

    Each artifact runs under qemu-user on each CPU model's kernels, on the export's own parity inputs, and is
    compared with the folded PyTorch model (from --checkpoint, or rebuilt from the synthetic weights a
    --random-weights export records) with the thresholds of the host parity. Results
    go into manifest.json beside the host parity. Emulated time is the check's cost, never a latency. The arm64
    environment (Debian sysroot, aarch64 wheels) is prepared on first use and reused.

    Example: mobileclip-deploy verify out/android -c mobileclip_s0.pt --cpu cortex-a53,cortex-a76
    """
    from mobileclip_deploy.exporters import manifest as mf
    from mobileclip_deploy.exporters.pipeline import ExportRequest, context
    from mobileclip_deploy.verify import arm64
    from mobileclip_deploy.verify.arm64_env import Arm64Env, check_tools, default_cache, parse_cpus

    if arch != "arm64":
        raise UserError(f"--arch {arch!r} is not supported; use arm64")
    cpus = parse_cpus(cpu)
    if samples < 1:
        raise UserError("--samples must be at least 1")
    manifest = mf.load(export_dir)
    if manifest is None:
        raise UserError(f"{export_dir} has no {mf.FILENAME}: export into it first")
    entries = arm64.select(export_dir, manifest, backend)  # refuses tampered artifacts before any work
    check_tools()
    variant, folded = reference_model(export_dir, manifest, entries, checkpoint, calibration,
                                      "run `mobileclip-deploy export ... --verify arm64` instead")
    request = ExportRequest(pairs=[], output_dir=export_dir, towers=tuple(sorted({e["tower"] for e in entries})),
                            calibration=calibration, calibration_limit=calibration_limit)
    # Sysroot and progress lines are for humans (stderr); stdout carries the table or the JSON alone.
    env = Arm64Env(cache or default_cache(), report=lambda m: err_console.print(f"[dim]{m}[/]"))
    rows = arm64.verify(export_dir, context(folded, variant, request), cpus, env, samples, err_console, backend)
    if json_out:
        print_json([{"file": r.file, "cpu": r.cpu, **r.record} for r in rows])
    else:
        console.print(arm64.table(rows, f"{variant.display_name} on arm64 (qemu-user; cost is emulated time, "
                                        "not phone latency)", console.width))
    if not all(r.passed for r in rows):
        raise typer.Exit(1)


def reference_model(export_dir: Path, manifest: dict, entries: list[dict], checkpoint: Path | None,
                    calibration: Path | None, instead: str):
    """(variant, folded PyTorch model) an export was made from, after checking the weights are those (the
    checkpoint's sha256, or the synthetic weights rebuilt from their recipe and seed and matched by the hash of the
    folded weights) and that the parity photos can be rebuilt; `instead` says what to do for a default-init export."""
    from mobileclip_deploy import create_model, reparameterize
    from mobileclip_deploy.checkpoint import resolve_checkpoint_file
    from mobileclip_deploy.exporters.pipeline import folded_weights_id
    from mobileclip_deploy.hashing import sha256_path
    from mobileclip_deploy.models.synthetic import RECIPE
    from mobileclip_deploy.registry import get_variant

    needs_photos = any((e.get("parity") or {}).get("inputs") in ("held_out_images", "calibration_images")
                       for e in entries)
    if needs_photos and calibration is None:
        raise UserError("this export's parity used photos from its --calibration folder: pass the same --calibration")
    variant = get_variant(manifest["model"])
    if manifest.get("checkpoint_sha256") is not None:
        if checkpoint is None:
            raise UserError(f"pass --checkpoint: the checkpoint {export_dir} was exported from (sha256 "
                            f"{manifest['checkpoint_sha256'][:12]}...), for the PyTorch reference")
        if sha256_path(resolve_checkpoint_file(checkpoint)) != manifest["checkpoint_sha256"]:
            raise UserError(f"{checkpoint} is not the checkpoint {export_dir} was exported from (sha256 differs)")
        return variant, reparameterize(create_model(variant.name, checkpoint)).eval()
    weights = str(manifest.get("weights", ""))
    recipe, _, seed = weights.removeprefix("synthetic:").rpartition(":")
    if not weights.startswith("synthetic:") or recipe != RECIPE or not seed.isdigit():
        raise UserError(f"{export_dir} was exported from random weights ({weights or 'unrecorded'}), so its PyTorch "
                        "reference cannot be rebuilt; " + instead)
    if checkpoint is not None:
        raise UserError(f"{export_dir} was exported from synthetic weights ({weights}), not from a checkpoint: drop "
                        "--checkpoint")
    recorded = {e.get("weights") for e in entries}
    if None in recorded:
        raise UserError(f"{export_dir} was exported before its artifacts recorded the hash of their weights; re-export "
                        "it, or " + instead)
    folded = reparameterize(create_model(variant.name, synthetic_seed=int(seed))).eval()
    if recorded != {f"random:{folded_weights_id(folded)}"}:
        raise UserError(f"the synthetic weights {weights} rebuilt here differ from the ones {export_dir} was exported "
                        "with (another version of the package?); " + instead)
    return variant, folded

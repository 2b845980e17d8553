"""`mobileclip-deploy export`: folded image/text encoders to Core ML, ExecuTorch and ONNX, each parity-checked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mobileclip_deploy.cli.app import app, console, err_console
from mobileclip_deploy.cli.options import CheckpointOpt, ModelOpt, RandomWeightsOpt, load_model_for_cli
from mobileclip_deploy.errors import UserError


def _format_help() -> str:
    from mobileclip_deploy.exporters.backends import all_backends

    return "; ".join(f"{b.name}: {', '.join(b.scheme_names)}" for b in all_backends().values())


def _formats_help() -> str:
    from mobileclip_deploy.exporters.backends import all_backends

    backends = all_backends()
    return ", ".join(backends) + "".join(f"; {a} = {b.name}" for b in backends.values() for a in b.aliases)


def _parse_thresholds(values: list[str]) -> dict[str, float]:
    out = {}
    for value in values:
        key, sep, number = value.partition("=")
        try:
            out[key.strip()] = float(number)
        except ValueError:
            sep = ""
        if not sep:
            raise UserError(f"--threshold {value!r}: expected CLASS=COSINE, e.g. fp16=0.999")
    return out


def _fmt_size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"


def _fmt_parity(parity: dict | None) -> str:
    if not parity or parity.get("check") == "skipped":
        return "skipped"
    if "decisive" in parity:  # the gate's verdict (verify/gate.py): the metric that decided, or why none could
        verdict = {True: "", False: " FAILED", None: " NOT ASSESSABLE"}[parity["passed"]]
        value = parity[parity["decisive"]]
        text = f"{parity['decisive']} {value:.4g}{verdict}, cos {parity['min_cosine']:.6f} ({parity['check']})"
    else:
        text = f"cos {parity['min_cosine']:.6f} ({parity['check']})"
    if "zero_shot_top1_agreement" in parity:
        text += f", top-1 agree {parity['zero_shot_top1_agreement']:.0%}"
    return text


def _verify_cpus(verify: str | None, cpus: str | None, parity: bool) -> str | None:
    if verify is None:
        if cpus:
            raise UserError("--verify-cpu needs --verify arm64")
        return None
    if verify != "arm64":
        raise UserError(f"--verify {verify!r} is not supported; use --verify arm64")
    if not parity:
        raise UserError("--verify arm64 is part of the parity check; drop --no-parity")
    return cpus or ""


@app.command("export")
def export(
    model: ModelOpt = "mobileclip-s0",
    checkpoint: CheckpointOpt = None,
    random_weights: RandomWeightsOpt = False,
    format: Annotated[list[str] | None, typer.Option(
        "--format", "-f", help=f"{_formats_help()}; repeatable.")] = None,
    quant: Annotated[list[str] | None, typer.Option(
        "--quant", "-q", help="Scheme for every --format, or FORMAT:SCHEME for one; repeatable. "
                              f"Supported: {_format_help()}.")] = None,
    tower: Annotated[str | None, typer.Option(help="image, text or both (default both).")] = None,
    recipe: Annotated[Path | None, typer.Option(help="TOML recipe (see export/*.toml); flags given here override it.")] = None,
    calibration: Annotated[Path | None, typer.Option(
        help="Folder of representative photos: needed by static schemes (w8a8), also used for parity.")] = None,
    calibration_limit: Annotated[int | None, typer.Option(min=1, help="Use at most this many calibration images "
                                                          "(16).")] = None,
    deployment_target: Annotated[str | None, typer.Option(
        help="Core ML minimum target: iOS16, iOS17 (default) or iOS18; raised automatically when a scheme needs it.")] = None,
    image_input: Annotated[bool | None, typer.Option(
        "--image-input/--tensor-input", help="Core ML image encoder takes an image (camera frame, 0-255).")] = None,
    ort: Annotated[bool | None, typer.Option("--ort/--no-ort", help="Also write ONNX Runtime Mobile .ort files.")] = None,
    parity: Annotated[bool, typer.Option("--parity/--no-parity", help="Check every artifact against PyTorch.")] = True,
    threshold: Annotated[list[str] | None, typer.Option(
        help="Minimum cosine to PyTorch per class, e.g. --threshold 8bit=0.995; repeatable. Defaults: "
             "fp32=0.99999, fp16=0.999, 8bit=0.99, 4bit=0.98.")] = None,
    verify: Annotated[str | None, typer.Option(
        help="Also check the Android artifacts (ExecuTorch XNNPACK, ONNX, LiteRT) on emulated ARM CPUs: arm64 "
             "(see `verify --help`).")] = None,
    verify_cpu: Annotated[str | None, typer.Option(
        help="CPU models for --verify arm64 (default cortex-a53,cortex-a76).")] = None,
    min_cos: Annotated[float, typer.Option(
        min=-1.0, max=1.0, help="--quant auto: minimum cosine to fp32 on the calibration inputs the chosen plan must reach.")] = 0.999,
    min_agreement: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="--quant auto: minimum zero-shot top-1 agreement with fp32 on the calibration inputs.")] = 0.99,
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Folder for artifacts and manifest.json.")] = Path("out/export"),
    overwrite: Annotated[bool, typer.Option(help="Replace artifacts of other weights (another checkpoint, or an earlier "
                                            "--random-weights run) in --output-dir; without it such a folder is refused.")] = False,
) -> None:
    """Export folded image and text encoders, check each artifact's parity with PyTorch, write manifest.json.

    Artifacts are named <model>_<tower>_<backend>_<scheme>.<ext>; the output folder also gets the tokenizer
    files and manifest.json (shapes, preprocessing, hashes, tool versions, parity). Bad requests are refused
    before any work; an artifact below its parity threshold is not written. Re-running reuses an artifact
    only if it was made from the same weights, options and tool versions.

    Examples:

      mobileclip-deploy export -m mobileclip-s0 -c mobileclip_s0.pt -f coreml -q fp16 -q pal8 -o out/ios

      mobileclip-deploy export -m mobileclip-s0 -c mobileclip_s0.pt -f executorch -f onnx -q fp32 -q 8da8w

      mobileclip-deploy export -m mobileclip-s0 -c mobileclip_s0.pt -q executorch:w8a8 --calibration photos/

      mobileclip-deploy export -m mobileclip-s0 -c mobileclip_s0.pt --recipe export/android-cpu.toml

      mobileclip-deploy export -m mobileclip-s0 -c mobileclip_s0.pt -q onnx:auto --calibration photos/ --min-cos 0.999
    """
    from mobileclip_deploy.exporters import pipeline
    from mobileclip_deploy.exporters.recipe import Recipe, load_recipe
    from mobileclip_deploy.registry import get_variant
    from mobileclip_deploy.exporters.backends import resolve_pairs

    spec = load_recipe(recipe) if recipe else Recipe()
    if spec.model is not None and get_variant(spec.model).name != get_variant(model).name:
        raise UserError(f"recipe {recipe} was written for {spec.model} (its kept layers are that model's); "
                        f"this export is --model {model}: use a recipe for {model}, or run --quant auto for it")
    towers_opt = tower or spec.tower or "both"
    if towers_opt not in ("image", "text", "both"):
        raise UserError(f"--tower must be image, text or both, not {towers_opt!r}")
    cli_pairs = bool(format or quant)
    pairs = resolve_pairs(list(format or []), list(quant or [])) if cli_pairs else resolve_pairs([], spec.quants)
    request = pipeline.ExportRequest(
        pairs=pairs, output_dir=output_dir,
        towers=("image", "text") if towers_opt == "both" else (towers_opt,),
        calibration=calibration or spec.calibration,
        calibration_limit=calibration_limit or spec.calibration_limit or 16,
        parity=parity, thresholds={**spec.thresholds, **_parse_thresholds(threshold or [])},
        options={"deployment_target": deployment_target, "image_input": image_input, "ort": ort},
        format_options=spec.options, overwrite=overwrite,
        verify_arm64=_verify_cpus(verify, verify_cpu, parity), keep=spec.keep,
        min_cos=min_cos, min_agreement=min_agreement)
    pipeline.plan(request)  # refuse bad combinations before the model is even loaded
    net, variant, checkpoint_sha = load_model_for_cli(model, checkpoint, random_weights)
    results = pipeline.run(request, net, variant, checkpoint_sha, err_console)  # progress and notes: stderr

    table = Table(title=f"{variant.display_name} export -> {output_dir}")
    for column in ("artifact", "size", "parity", "status"):
        table.add_column(column)
    for r in results:
        style = {"ok": "green", "cached": "cyan"}.get(r.status, "red")
        table.add_row(r.file, _fmt_size(r.size_bytes), _fmt_parity(r.parity), f"[{style}]{r.status}[/]")
    console.print(table)
    for r in results:
        if r.status == "ok" and r.message:
            console.print(f"{r.file}: {r.message}")
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        console.print(f"[red]{r.message}[/]")
    if failed:
        raise typer.Exit(1)
    console.print(f"next: mobileclip-deploy bench {output_dir}")

"""`mobileclip-deploy diagnose`: where an exported artifact first departs from the folded PyTorch model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mobileclip_deploy.cli.app import app, console, print_json
from mobileclip_deploy.cli.options import CheckpointOpt, JsonOpt
from mobileclip_deploy.errors import UserError


@app.command("diagnose")
def diagnose(
    export_dir: Annotated[Path, typer.Argument(help="An export folder (with manifest.json).")],
    artifact: Annotated[str, typer.Argument(help="The artifact's file name in EXPORT_DIR.")],
    checkpoint: CheckpointOpt = None,
    calibration: Annotated[Path | None, typer.Option(
        help="The export's --calibration folder, when its parity used photos from it.")] = None,
    calibration_limit: Annotated[int, typer.Option(min=1, help="The export's --calibration-limit.")] = 16,
    json_out: JsonOpt = False,
) -> None:
    """Compare ARTIFACT with the folded PyTorch model op by op and name the first module where they diverge.

    Runs the export's first parity input through both, the artifact on its own runtime with its intermediate values
    kept (Core ML programs, also inside an executorch-coreml .pte, executed op by op; ONNX graphs with intermediate
    outputs; LiteRT's preserved tensors; Core AI's debug intermediates; ExecuTorch XNNPACK fp32, whose saved
    partition hides its values, on a twin lowered again the same way with module outputs tapped, once the twin
    reproduces the file's output). Each op tied to a PyTorch module is compared with it (input and output); the
    first whose relative error exceeds the scheme's tolerance is named, or the modules PyTorch ran between it and the
    last op that agreed. Exit code 1 when a divergence is found.

    Example: mobileclip-deploy diagnose out/ios mobileclip-s0_image_coreml_fp16.mlpackage -c mobileclip_s0.pt
    """
    from mobileclip_deploy.cli.verify import reference_model
    from mobileclip_deploy.exporters import manifest as mf
    from mobileclip_deploy.exporters.pipeline import ExportRequest, context
    from mobileclip_deploy.exporters.backends import of_artifact
    from mobileclip_deploy.hashing import sha256_path
    from mobileclip_deploy.verify.diagnose import diagnose as run_diagnosis

    manifest = mf.load(export_dir)
    if manifest is None:
        raise UserError(f"{export_dir} has no {mf.FILENAME}: export into it first")
    entry = mf.find(manifest, artifact)
    if entry is None:
        raise UserError(f"{artifact} is not an artifact of {export_dir}; its manifest lists "
                        f"{', '.join(e['file'] for e in manifest['artifacts'])}")
    path = export_dir / entry["file"]
    if not path.exists() or sha256_path(path) != entry["sha256"]:
        raise UserError(f"{path} is missing or changed since it was exported (sha256 differs); re-export it")
    variant, folded = reference_model(export_dir, manifest, [entry], checkpoint, calibration,
                                      "export it again from a checkpoint to diagnose it")
    request = ExportRequest(pairs=[], output_dir=export_dir, towers=(entry["tower"],), calibration=calibration,
                            calibration_limit=calibration_limit)
    ctx = context(folded, variant, request)
    backend = of_artifact(entry["backend"])
    found = run_diagnosis(backend, path, ctx.export_towers[entry["tower"]], ctx.inputs(entry["tower"])[:1],
                          backend.scheme(entry["scheme"]))
    if json_out:
        print_json({"file": entry["file"], **found})
    elif found["module"] is None:
        console.print(f"{entry['file']}: no divergence beyond relative error {found['tolerance']:g} at any of the "
                      f"{found['compared']} compared ops")
    else:
        console.print(f"{entry['file']}: first divergence at {found['module']} ({found['where']}; op {found['op']}, "
                      f"relative error {found['relative_error']:.3g} > {found['tolerance']:g})")
    if found.get("note") and not json_out:
        console.print(f"  {found['note']}")
    if found["module"] is not None:
        raise typer.Exit(1)

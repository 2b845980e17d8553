"""`mobileclip-deploy bundle ios|android`: put an export into an app."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from mobileclip_deploy.bundle import BundleReport, bundle_android, bundle_ios
from mobileclip_deploy.cli.app import app, console, err_console, print_json

bundle_app = typer.Typer(help="Copy exported models into an app project.", no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")


def _report(report: BundleReport, as_json: bool, next_step: str | None) -> None:
    """The table (or JSON) on stdout; replacements, warnings and the next step on stderr."""
    if as_json:
        print_json(report.to_dict())
    else:
        table = Table(title=f"{report.model} bundled into {report.destination}")
        for column in ("model", "tower", "runtime", "scheme"):
            table.add_column(column)
        table.add_column("file", overflow="fold")
        table.add_column("size", justify="right")
        for a in report.artifacts:
            table.add_row(a.model, a.tower, a.backend, a.scheme, a.file, f"{a.size_bytes / 1e6:.1f} MB")
        console.print(table)
    if report.replaced:
        err_console.print(f"replaced the earlier bundle in {report.destination} (it held only its own files)")
    for tower in report.missing_towers:
        err_console.print(f"[yellow]warning: the export has no {tower} encoder for {report.platform}; the demo app "
                          "needs both towers (export without --tower, or add the missing one)[/]")
    if next_step and not as_json:
        err_console.print(next_step)


@bundle_app.command("ios")
def ios(
    export: Path = typer.Option(..., "--export", help="Export folder with manifest.json and .mlpackage files."),
    app_dir: Path = typer.Option(
        Path("apps/ios/MobileCLIPDemo"), "--app", help="Demo app folder (or any folder to copy into)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Copy the Core ML encoders, tokenizer files and a filtered manifest into the app's resources."""
    report = bundle_ios(export, app_dir)
    _report(report, as_json, f"Next: cd {app_dir} && xcodegen generate, then build and run in Xcode."
            if report.destination != app_dir else None)


@bundle_app.command("android")
def android(
    export: Path = typer.Option(..., "--export", help="Export folder with manifest.json and .onnx/.pte/.tflite "
                                "files."),
    app_dir: Path = typer.Option(..., "--app", help="Android app module (its src/main/assets receives the files), "
                                 "project (app/src/main/assets), a folder with assets/, or any folder to copy into."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Copy the ONNX, ExecuTorch and LiteRT encoders, tokenizer files and a filtered manifest into the app's
    assets (`assets/<model>/`), each checked against its manifest sha256."""
    _report(bundle_android(export, app_dir), as_json, None)

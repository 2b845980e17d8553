"""`mobileclip-deploy bundle ios`: put an export into the iOS demo app."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from mobileclip_deploy.bundle import bundle_ios
from mobileclip_deploy.cli.app import app, console, print_json

bundle_app = typer.Typer(help="Copy exported models into an app project.", no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")


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
    if as_json:
        print_json(report.to_dict())
        return
    table = Table(title=f"{report.model} bundled into {report.destination}")
    for column in ("model", "tower", "scheme"):
        table.add_column(column)
    table.add_column("file", overflow="fold")
    table.add_column("size", justify="right")
    for a in report.artifacts:
        table.add_row(a.model, a.tower, a.scheme, a.file, f"{a.size_bytes / 1e6:.1f} MB")
    console.print(table)
    if report.replaced:
        console.print(f"replaced the earlier bundle in {report.destination}")
    if report.destination != app_dir:
        console.print(f"Next: cd {app_dir} && xcodegen generate, then build and run in Xcode.")

"""`mobileclip-deploy` command line: one typer app, one module per group of commands."""

from __future__ import annotations

import sys

from mobileclip_deploy.cli.app import app, console
from mobileclip_deploy.errors import UserError

# Each module registers its commands on `app` when imported.
from mobileclip_deploy.cli import zoo  # noqa: F401,E402
from mobileclip_deploy.cli import bench  # noqa: F401,E402
from mobileclip_deploy.cli import bundle  # noqa: F401,E402
from mobileclip_deploy.cli import export  # noqa
from mobileclip_deploy.cli import verify  # noqa: F401,E402


def main() -> None:
    try:
        app()
    except UserError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)

"""`mobileclip-deploy` command line: one typer app, one module per group of commands."""

from __future__ import annotations

import sys

from mobileclip_deploy.cli.app import ReportedUserError, app, err_console
from mobileclip_deploy.errors import UserError

# Each module registers its commands on `app` when imported.
from mobileclip_deploy.cli import zoo  # noqa: F401,E402
from mobileclip_deploy.cli import bench  # noqa: F401,E402
from mobileclip_deploy.cli import bundle  # noqa: F401,E402
from mobileclip_deploy.cli import export  # noqa: F401,E402
from mobileclip_deploy.cli import train  # noqa: F401,E402
from mobileclip_deploy.cli import verify  # noqa: F401,E402
from mobileclip_deploy.cli import diagnose  # noqa: F401,E402


def main() -> None:
    """The installed entry point; the app itself reports a `UserError` (stderr, exit 2), this only backs it up."""
    try:
        app()
    except ReportedUserError:
        sys.exit(2)
    except UserError as exc:  # raised outside a command (e.g. while building the app)
        err_console.print(f"error: {exc}", markup=False)
        sys.exit(2)

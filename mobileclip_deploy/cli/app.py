"""The typer app and the console shared by every command module.

A `UserError` becomes one `error: ...` line on stderr and exit code 2 inside the app itself (`_Group.invoke`), so
the installed entry point and an in-process `CliRunner().invoke(app, ...)` behave alike; JSON stays on stdout.
"""

import json
import math

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from typer.core import TyperGroup

from mobileclip_deploy.errors import UserError

console = Console(stderr=False)
err_console = Console(stderr=True)


class ReportedUserError(UserError, SystemExit):
    """A `UserError` already printed on stderr: exits with code 2 and still reads as the original error in tests."""

    def __init__(self, error: UserError) -> None:
        super().__init__(str(error))
        self.code = 2

    def __str__(self) -> str:
        return str(self.args[0])


class _Group(TyperGroup):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ReportedUserError:
            raise
        except UserError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)  # paths stay whole
            raise ReportedUserError(exc) from None


def _version(value: bool) -> None:
    if value:
        from mobileclip_deploy import __version__

        typer.echo(f"mobileclip-deploy {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="mobileclip-deploy",
    cls=_Group,
    help="Rebuild, reparameterize, export, benchmark and bundle MobileCLIP models for phones.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Rebuild, reparameterize, export, benchmark and bundle MobileCLIP models for phones."""


def progress_bar() -> Progress:
    """The one progress display of the commands, on stderr so it never mixes into stdout (tables, JSON): a
    transient bar in a terminal, plain lines elsewhere (mobileclip_deploy/progress.py)."""
    from mobileclip_deploy.progress import progress

    return progress(err_console)


def _non_finite(obj: object) -> bool:
    if isinstance(obj, float):
        return not math.isfinite(obj)
    if isinstance(obj, dict):
        return any(_non_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_non_finite(v) for v in obj)
    return False


def print_json(obj: object) -> None:
    """Strict JSON for scripts on stdout, never wrapped or coloured by rich; NaN/inf (not JSON) is refused."""
    if _non_finite(obj):
        raise UserError("the result holds NaN or infinite values, which JSON cannot carry; the weights or inputs "
                        "are broken (check the checkpoint and images)")
    typer.echo(json.dumps(obj, indent=2, default=str, allow_nan=False))

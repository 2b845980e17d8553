"""The typer app and the console shared by every command module."""

import json

import typer
from rich.console import Console

app = typer.Typer(
    name="mobileclip-deploy",
    help="Rebuild, reparameterize, export, benchmark and bundle MobileCLIP models for phones.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=False)
err_console = Console(stderr=True)


def print_json(obj: object) -> None:
    """JSON for scripts on stdout, never wrapped or coloured by rich."""
    typer.echo(json.dumps(obj, indent=2, default=str))

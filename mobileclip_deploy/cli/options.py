"""Options shared by every command that needs a model, and the one place that loads it for the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from torch import nn

from mobileclip_deploy.cli.app import err_console
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.registry import Variant, get_variant

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Registry name, e.g. mobileclip-s0 or MobileCLIP2-S2.")]
CheckpointOpt = Annotated[Path | None, typer.Option(
    "--checkpoint", "-c", help="Official .pt, open_clip .bin/.pt/.safetensors, or a Hugging Face folder.")]
RandomWeightsOpt = Annotated[bool, typer.Option(
    "--random-weights", help="Use synthetic weights (seeded, not a trained model: inputs embed apart so parity "
    "checks mean something; latency and plumbing only, every output says so).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]

RANDOM_WARNING = ("RANDOM WEIGHTS: no checkpoint was loaded; synthetic weights (not a trained model) stand in, so "
                  "embeddings, scores and accuracy are meaningless.")


def load_model_for_cli(model: str, checkpoint: Path | None, random_weights: bool) -> tuple[nn.Module, Variant, str | None]:
    """Build and load the model, refusing to run on random weights unless asked; returns the checkpoint sha256."""
    from mobileclip_deploy import create_model
    from mobileclip_deploy.hashing import sha256_path

    variant = get_variant(model)
    if checkpoint is None and not random_weights:
        raise UserError(f"{variant.name} needs weights: pass --checkpoint PATH (official .pt, open_clip "
                        ".bin/.safetensors or a Hugging Face folder), or --random-weights for latency-only work.")
    if checkpoint is not None and random_weights:
        raise UserError("pass either --checkpoint or --random-weights, not both.")
    if random_weights:
        err_console.print(f"[bold yellow]WARNING: {RANDOM_WARNING}[/]")
        return create_model(variant.name, synthetic_seed=0), variant, None
    from mobileclip_deploy.checkpoint import resolve_checkpoint_file

    net = create_model(variant.name, checkpoint)
    if net.checkpoint_info.upcast_from:
        err_console.print(f"[yellow]note: {checkpoint} holds {net.checkpoint_info.upcast_from} weights; they were "
                          "upcast to float32 (results match the half-precision weights, not a float32 original)[/]")
    return net, variant, sha256_path(resolve_checkpoint_file(checkpoint))


def upcast_field(net: nn.Module) -> dict[str, str | None]:
    """The `--json` field saying whether half-precision weights were upcast (null: loaded as stored, or random)."""
    info = getattr(net, "checkpoint_info", None)
    return {"checkpoint_upcast_from": info.upcast_from if info else None}


def above(bound: float):
    """A typer callback refusing values <= `bound` (and NaN): typer's own `min`/`max` are closed ranges, so a
    strictly positive scale or learning rate needs this. Lists (repeatable options) are checked item by item."""
    def check(value):
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and not v > bound:
                raise typer.BadParameter(f"{v} must be greater than {bound:g}.")
        return value

    check.bound = ("above", bound)
    return check


def below(bound: float):
    """A typer callback refusing values >= `bound` (a fraction that must leave something)."""
    def check(value):
        if value is not None and not value < bound:
            raise typer.BadParameter(f"{value} must be less than {bound:g}.")
        return value

    check.bound = ("below", bound)
    return check


def device_option(value: str | None) -> str | None:
    """Refuse an unknown device, or `cuda` without a GPU, while the options are read (before any loading)."""
    from mobileclip_deploy.training.distributed import check_device

    if value is not None:
        try:
            check_device(value)
        except UserError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


DeviceOpt = Annotated[str | None, typer.Option("--device", callback=device_option,
                                               help="cpu or cuda (default: cuda when available).")]

"""What several test modules share: the CLI refusal check, and a backend that exists only in the tests (it joins the
registry like a real one and runs through plan, export, parity, manifest, bench and eval without any other module
naming it)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from goldens import golden_tensor
from rich.console import Console
from typer.testing import CliRunner

from mobileclip_deploy import runtimes
from mobileclip_deploy.cli import app
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters import backends, pipeline
from mobileclip_deploy.exporters.backends import Backend, Build, resolve_pairs
from mobileclip_deploy.exporters.schemes import FP16, FP32, Scheme
from mobileclip_deploy.models.clip import CLIP
from mobileclip_deploy.models.mci import MCiConfig
from mobileclip_deploy.models.text import TextConfig
from mobileclip_deploy.registry import get_variant

# A MobileCLIP-S0-shaped model (same blocks, a fraction of the width) for export tests where full size proves
# nothing more.


TINY = dataclasses.replace(
    get_variant("mobileclip-s0"), name="tiny-s0", display_name="Tiny S0", embed_dim=32, image_size=64,
    image=MCiConfig((1, 1, 1, 1), (16, 32, 32, 64), 2.0, (3,), (False, False, True, True)),
    text=TextConfig(width=64, heads=2, layers=1, mct=True))
WEIGHTS = "tiny-golden-weights"  # stands in for a checkpoint sha256


def tiny_model() -> CLIP:
    """The tiny model with golden-recipe weights (random init would make every output nearly constant)."""
    model = CLIP(TINY)
    state = {k: golden_tensor(k, list(v.shape), str(v.dtype).removeprefix("torch."))
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return model.eval()


def synthetic_tiny_model() -> CLIP:
    """The tiny model with the synthetic weights `--random-weights` uses (golden-qk2: its text tower separates
    prompts too, where the golden recipe's tiny text tower leaves the parity inputs too alike to judge)."""
    from mobileclip_deploy.models.synthetic import load_synthetic

    model = CLIP(TINY)
    load_synthetic(model)
    return model.eval()


def export(out: Path, quants: list[str], *, towers=("image", "text"), weights: str = WEIGHTS, options=None, **request):
    request = pipeline.ExportRequest(pairs=resolve_pairs([], quants), output_dir=out, towers=towers,
                                     options=options or {}, **request)
    return pipeline.run(request, tiny_model(), TINY, weights, Console(quiet=True))


def entries(out: Path) -> dict[str, dict]:
    return {e["file"]: e for e in json.loads((out / "manifest.json").read_text())["artifacts"]}


def refusal(*args: object) -> str:
    """Run the CLI in-process and return its refusal, one line unwrapped: a UserError, exit code 2, `error:` on
    stderr, no traceback."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert isinstance(result.exception, UserError), result.output
    assert result.exit_code == 2 and "error:" in result.stderr and "Traceback" not in result.output
    return " ".join(str(result.exception).split())


class Recording(Backend):
    """Writes the tower as a TorchScript file (`.rec`) that its runtime runs; records what the export was given."""

    name = "test-recording"
    suffix = ".rec"
    schemes = (FP32, FP16, Scheme("w8a8", 8, static=True, help="static int8 (stands in: calibration photos)"))
    help = "test-only backend"
    runtime = "test-recording"
    platform = "android"
    option_defaults = {"note": ""}
    option_refusals = {"note": "--note applies to the test backend"}
    seen: list[Build] = []

    def export(self, build: Build) -> tuple[dict, object]:
        Recording.seen.append(build)
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(build.module, (build.example,)), str(build.path))
        return {"calibration_sha256": build.context.calibration_sha256, "note": build.options["note"]}, None


def _load(path: Path, threads: int = 1) -> runtimes.Runner:
    module = torch.jit.load(str(path))
    image = path.name.split("_")[1] == "image"

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return runtimes.Runner(run, [1, 3, 64, 64] if image else [1, 77], np.float32 if image else np.int32,
                           {"name": "test-recording", "version": "0"})


@contextlib.contextmanager
def registered(cls: type[Backend] = Recording) -> Iterator[Backend]:
    """Register `cls` (and its runtime) for the duration of a test; the registry is as before afterwards."""
    runtime = runtimes.Runtime(cls.runtime, (cls.suffix,), _load)
    backends.all_backends()
    runtimes._discover()
    backends.register(cls)
    runtimes.register(runtime)
    try:
        yield backends.get_backend(cls.name)
    finally:
        del backends._BACKENDS[cls.name]
        del runtimes._RUNTIMES[runtime.name]
        Recording.seen.clear()

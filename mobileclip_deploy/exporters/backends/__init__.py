"""TEMPORARY shim of the backend registry described in REGISTRY.md, so the coreai backend imports and its tests
run before the lead's registry lands in main. On merge, take main's version of this file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobileclip_deploy.exporters.schemes import Scheme


@dataclass
class Build:
    tower: str
    scheme: Scheme
    module: nn.Module
    example: torch.Tensor
    variant: Any
    path: Path
    work_dir: Path
    inputs: np.ndarray
    metadata: dict = field(default_factory=dict)
    calibration: np.ndarray | None = None
    keep: list[str] | None = None
    options: dict = field(default_factory=dict)
    step: Callable[[str], None] = lambda msg: None


class Backend:
    name: str
    suffix: str
    schemes: tuple[Scheme, ...]
    help: str
    runtime: str | None = None
    platform: str
    extra: str | None = None
    requires: tuple[str, ...] = ()

    def export(self, build: Build) -> tuple[dict, object]:
        raise NotImplementedError

    def check(self, build: Build, handle) -> tuple[str, np.ndarray, dict]:
        from mobileclip_deploy import runtimes

        runner = runtimes.load(build.path, runtime=self.runtime)
        return self.runtime, runner.batched(build.inputs), {"runtime": runner.info}


BACKENDS: dict[str, Backend] = {}


def register(cls: type[Backend]) -> type[Backend]:
    BACKENDS[cls.name] = cls()
    return cls

"""ExecuTorch with the XNNPACK delegate: `.pte` programs for Android (and iOS) CPUs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters.backends import Backend, Build, register
from mobileclip_deploy.exporters.schemes import FP32, Scheme

# Schemes `diagnose` lowers a twin for (checked against a planted defect in tests/test_diagnose.py).
TWINNED = ("fp32",)


@register
class ExecutorchXnnpack(Backend):
    name = "executorch-xnnpack"
    suffix = ".pte"
    aliases = ("executorch", "pte")
    schemes = (
        FP32,
        Scheme("w8a8", 8, static=True, help="static int8 activations, per-channel int8 weights"),
        Scheme("8da8w", 8, help="dynamic int8 activations, per-channel int8 linear weights"),
        Scheme("8da4w", 4, help="dynamic int8 activations, int4 linear weights in groups of 32"),
        Scheme("auto", 8, static=True, help="static int8 (w8a8), float layers chosen by measured sensitivity "
               "and latency to meet --min-cos/--min-agreement (writes a recipe reproducing the plan)",
               rebuilds_as="w8a8"),
        Scheme("auto-8da8w", 8, static=True, help="dynamic int8 (8da8w), float linears chosen by measured "
               "sensitivity and latency to meet --min-cos/--min-agreement (writes a recipe reproducing the "
               "plan; the photos score the plan)", rebuilds_as="8da8w"),
    )
    help = "ExecuTorch with the XNNPACK delegate for Android/iOS CPUs"
    runtime = "executorch"
    check_name = "executorch_runtime"
    runtime_target = "executorch>=1.5"
    platform = "android"
    arm64_guest = "executorch"
    keep_key = "keep_float"
    tools = ("executorch", "torchao")
    auto_titles = {"w8a8": "ExecuTorch XNNPACK static int8", "8da8w": "ExecuTorch XNNPACK dynamic int8"}

    def export(self, build: Build) -> tuple[dict[str, Any], Any]:
        from mobileclip_deploy.exporters import executorch as et_exp

        if build.scheme.rebuilds_as:  # the search writes the chosen .pte
            from mobileclip_deploy.exporters.autoquant_xnnpack import search_and_export

            inputs, anchors, targets = build.context.search_inputs(build.tower)
            plan, facts = search_and_export(build.module, build.example, build.tower, build.calibration, inputs,
                                            anchors, targets, build.path, build.step, scheme=build.scheme.rebuilds_as)
            return {**facts, "auto_plan": plan.to_dict()}, plan
        facts, edge = et_exp.export(build.module, build.example, build.scheme.name, "xnnpack", build.path,
                                    build.calibration, keep=build.keep)
        return facts, edge

    def diagnose(self, path: Path, module: nn.Module, x: np.ndarray, tol: float, scheme: Scheme) -> dict[str, Any]:
        """On a twin: the tower lowered again as `export` lowered it, with module outputs tapped (the saved file's
        single XNNPACK partition hides its intermediate values), after checking the twin reproduces the file."""
        from mobileclip_deploy.verify.diagnose import xnnpack

        if scheme.name not in TWINNED:
            raise UserError(f"{path.name}: diagnose localises {self.name} layers on a twin lowered again from the "
                            f"tower, for {', '.join(TWINNED)} artifacts only, not {scheme.name}")
        return xnnpack.compare(path, module, x, tol, scheme.name)

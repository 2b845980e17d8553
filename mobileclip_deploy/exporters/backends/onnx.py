"""ONNX for ONNX Runtime (desktop, server, ORT Mobile): one `.onnx` file, optionally its `.ort` twin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mobileclip_deploy.exporters.backends import Backend, Build, register
from mobileclip_deploy.exporters.schemes import FP16, FP32, Scheme


@register
class Onnx(Backend):
    name = "onnx"
    suffix = ".onnx"
    suffixes = (".onnx", ".ort")
    schemes = (
        FP32, FP16,
        Scheme("8da8w", 8, help="dynamic int8 (ORT quantize_dynamic) of MatMul/Gemm; convs stay float"),
        Scheme("w8a8", 8, static=True, help="static int8 QDQ with calibration"),
        Scheme("auto", 8, static=True, help="static int8 QDQ, float layers chosen by measured sensitivity "
               "and latency to meet --min-cos/--min-agreement (writes a recipe reproducing the plan)",
               rebuilds_as="w8a8"),
    )
    help = "one-file ONNX for ONNX Runtime (desktop, server, ORT Mobile)"
    runtime = "onnxruntime"
    runtime_target = "onnxruntime>=1.17"
    platform = "android"
    arm64_guest = "onnxruntime"
    keep_key = "keep_float"
    tools = ("onnx", "onnxruntime", "onnxscript")
    auto_titles = {"w8a8": "ONNX static int8"}
    option_defaults = {"ort": False}
    option_refusals = {"ort": "--ort converts ONNX artifacts; add --format onnx"}

    def files(self, options: dict[str, Any]) -> list[str]:
        return list(self.suffixes) if options.get("ort") else [self.suffix]

    def export(self, build: Build) -> tuple[dict[str, Any], Any]:
        from mobileclip_deploy.exporters import onnx as onnx_exp

        if build.scheme.rebuilds_as:
            from mobileclip_deploy.exporters.autoquant import search_onnx

            inputs, anchors, targets = build.context.search_inputs(build.tower)
            plan = search_onnx(build.module, build.example, build.tower, build.calibration, inputs, anchors,
                               targets, build.step)
            build.step("exporting the chosen plan")
            facts = onnx_exp.export(build.module, build.example, build.tower, build.scheme.rebuilds_as, build.path,
                                    build.calibration, build.work_dir, keep=plan.keep)
            return {**facts, "auto_plan": plan.to_dict()}, plan
        return onnx_exp.export(build.module, build.example, build.tower, build.scheme.name, build.path,
                               build.calibration, build.work_dir, keep=build.keep), None

    def derive(self, build: Build, suffix: str, path: Path) -> None:
        from mobileclip_deploy.exporters import onnx as onnx_exp

        build.step("writing ORT format")
        onnx_exp.write_ort(build.path, path, build.scheme.name)

    def diagnose(self, path: Path, module: nn.Module, x: np.ndarray, tol: float, scheme: Scheme) -> dict[str, Any]:
        from mobileclip_deploy.verify.diagnose import onnx

        return onnx.compare(path, module, x, tol)

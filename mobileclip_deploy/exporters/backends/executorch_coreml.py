"""ExecuTorch with the Core ML delegate: a `.pte` whose payload is a Core ML program, for iPhones."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mobileclip_deploy.exporters.backends import Build, register
from mobileclip_deploy.exporters.backends.coreml import CoreMLTarget
from mobileclip_deploy.exporters.schemes import FP16, FP32, Scheme


@register
class ExecutorchCoreML(CoreMLTarget):
    name = "executorch-coreml"
    suffix = ".pte"
    schemes = (FP32, FP16)
    help = "ExecuTorch with the Core ML delegate for iPhones"
    platform = None  # MobileCLIPKit loads Core ML programs, not .pte files: neither bundled nor timed on iOS
    tools = ("executorch", "coremltools")

    def export(self, build: Build) -> tuple[dict[str, Any], Any]:
        from mobileclip_deploy.exporters import executorch as et_exp

        target = build.options["deployment_target"]
        facts, edge = et_exp.export(build.module, build.example, build.scheme.name, "coreml", build.path,
                                    build.calibration, target, keep=build.keep)
        return {**facts, "deployment_target": target}, edge

    def check(self, build: Build, path: Path, handle: Any) -> tuple[str, np.ndarray, dict[str, Any]]:
        """The embedded Core ML payload: its structure (the delegate names payload I/O itself; the .pte's I/O is
        what apps see), then the payload program executed op by op."""
        from mobileclip_deploy.exporters import executorch as et_exp

        package = et_exp.extract_coreml_payload(handle, build.work_dir / "payload")
        facts: dict[str, Any] = {}
        self.check_structure(package, build.tower, facts, io_problems=False)
        name, out = self.program_check(build, package, facts)
        return name, out, facts

    def diagnose(self, path: Path, module: nn.Module, x: np.ndarray, tol: float, scheme: Scheme) -> dict[str, Any]:
        """The Core ML program inside the `.pte`, unpacked from the file and executed op by op like an `.mlpackage`."""
        from mobileclip_deploy.exporters import executorch as et_exp
        from mobileclip_deploy.verify.diagnose import coreml

        with tempfile.TemporaryDirectory() as folder:
            return coreml.compare(et_exp.coreml_payload_of(path, Path(folder)), module, x, tol)

"""Core ML mlprogram (`.mlpackage`) for iPhone, iPad and Mac (Neural Engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters.backends import Backend, Build, register, tower_lists
from mobileclip_deploy.exporters.parity import run_batched
from mobileclip_deploy.exporters.schemes import FP16, FP32, Scheme

IOS_TARGETS = ("iOS16", "iOS17", "iOS18")
DEFAULT_TARGET = "iOS17"


def _ios(target: str) -> int:
    return int(target.removeprefix("iOS"))


class CoreMLTarget(Backend):
    """What the backends that write a Core ML program share: the deployment target, raised where a scheme needs it."""

    option_defaults = {"deployment_target": None}
    option_refusals = {"deployment_target": "--deployment-target sets the iOS version of Core ML programs; add "
                                            "--format coreml or executorch-coreml"}
    platform = "ios"

    def resolve(self, scheme: Scheme, options: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        options, notices = super().resolve(scheme, options)
        asked = options["deployment_target"]
        if asked is not None and asked not in IOS_TARGETS:
            raise UserError(f"unknown deployment target {asked!r}; use one of {', '.join(IOS_TARGETS)}")
        target = asked or DEFAULT_TARGET
        if scheme.min_target and _ios(target) < _ios(scheme.min_target):
            if asked is not None:
                raise UserError(f"coreml {scheme.name} needs deployment target {scheme.min_target} or later "
                                f"({scheme.help}); you asked for {asked}")
            notices.append(f"coreml {scheme.name}: deployment target raised to {scheme.min_target} ({scheme.help})")
            target = scheme.min_target
        return {**options, "deployment_target": target}, notices

    def check_structure(self, package: Path, tower: str, facts: dict[str, Any], io_problems: bool = True) -> None:
        """Spec version, named I/O and dtypes, op inventory, compressed weights: what is checked before running."""
        from mobileclip_deploy.exporters import coreml as coreml_exp
        from mobileclip_deploy.exporters.context import ParityFailure

        structure = coreml_exp.inspect_structure(package, tower)
        facts["structure"] = {k: structure[k] for k in ("specification_version", "op_counts",
                                                        "compressed_weight_ops", "tables")}
        if io_problems and structure["problems"]:
            raise ParityFailure(f"structure check failed: {'; '.join(structure['problems'])}")

    def program_check(self, build: Build, package: Path, facts: dict[str, Any]) -> tuple[str, np.ndarray]:
        """The saved program executed op by op on this host (runtimes/coreml_program.py), fp16 range included."""
        from mobileclip_deploy.exporters import coreml as coreml_exp

        out, program = coreml_exp.program_outputs(package, build.tower, build.inputs)
        facts["program"] = program
        note = coreml_exp.overflow_text(program)
        if note:
            facts["failure_note"] = note
        return "coreml_program_executed", out


@register
class CoreML(CoreMLTarget):
    name = "coreml"
    suffix = ".mlpackage"
    aliases = ("mlpackage",)
    schemes = (
        FP32, FP16,
        Scheme("w8", 8, help="int8 per-channel linear weights, fp16 compute"),
        Scheme("pal8", 8, help="8-bit k-means palettized weights (grouped per-channel on iOS18)"),
        Scheme("pal6", 6, help="6-bit k-means palettized weights (grouped per-channel on iOS18)"),
        Scheme("pal4", 4, min_target="iOS18", help="4-bit palettized weights, grouped per-channel (iOS18)"),
        Scheme("auto", 4, static=True, min_target="iOS18", help="4-bit palettes (iOS18) with the layers that "
               "need it at 8 bits, chosen by measured sensitivity to meet --min-cos/--min-agreement with the "
               "smallest weights (writes a recipe reproducing the plan)", rebuilds_as="pal4"),
    )
    help = "Core ML mlprogram for iPhone/iPad/Mac (Neural Engine)"
    keep_key = "keep_8bit"
    tools = ("coremltools",)
    auto_titles = {"pal4": "Core ML 4-bit palettes"}
    parity_hints = {"pal4": "try -q coreml:auto (4-bit palettes with the sensitive layers at 8 bits; needs "
                            "--calibration), -q coreml:pal6, or accept more error with --threshold 4bit=COSINE"}
    # keep_fp32 (recipe only, `[formats.coreml.keep_fp32]`, tower -> op names): the ops an fp16 overflow repair kept
    # in fp32, written by that repair so a rebuild starts from them
    option_defaults = {**CoreMLTarget.option_defaults, "image_input": False, "keep_fp32": {}}
    option_refusals = {**CoreMLTarget.option_refusals, "image_input": "--image-input applies to Core ML image "
                       "encoders; add --format coreml and the image tower"}

    def honours(self, option: str, tower: str) -> bool:
        return option != "image_input" or tower == "image"

    def resolve(self, scheme: Scheme, options: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        options, notices = super().resolve(scheme, options)
        keep = options.pop("keep_fp32")  # absent unless given: existing cache keys stay as they were
        if keep:
            keep = tower_lists(keep, "keep_fp32", "Core ML op names")
            if scheme.name == "fp32":
                raise UserError("keep_fp32 applies to schemes that compute in fp16; coreml fp32 computes in fp32")
            options["keep_fp32"] = keep
        return options, notices

    def input_kind(self, build: Build) -> str:
        return "image" if build.options.get("image_input") and build.tower == "image" else "tensor"

    def export(self, build: Build) -> tuple[dict[str, Any], Any]:
        from mobileclip_deploy import __version__
        from mobileclip_deploy.exporters import coreml as coreml_exp

        target, image_input = build.options["deployment_target"], self.input_kind(build) == "image"
        meta = coreml_exp.metadata_for(build.variant, build.tower, build.scheme.name, build.metadata["preprocessing"],
                                       __version__)
        if build.scheme.rebuilds_as:
            from mobileclip_deploy.exporters.autoquant_coreml import search_coreml

            inputs, anchors, targets = build.context.search_inputs(build.tower)
            plan = search_coreml(build.module, build.example, build.tower, target, inputs, anchors, targets,
                                 build.step)
            build.step("exporting the chosen plan")
            facts = coreml_exp.export(build.module, build.example, build.tower, build.scheme.rebuilds_as, build.path,
                                      target, image_input, meta, eight_bit=plan.keep)
            return {**facts, "auto_plan": plan.to_dict()}, plan
        parity = build.context.request.parity  # the parity inputs also find fp16 overflow (repaired in export)
        return coreml_exp.export(build.module, build.example, build.tower, build.scheme.name, build.path, target,
                                 image_input, meta, eight_bit=build.keep, inputs=build.inputs if parity else None,
                                 gate=self._gate(build) if parity else None,
                                 keep_fp32=build.options.get("keep_fp32", {}).get(build.tower, ())), None

    def recipe(self, build: Build, handle: Any, facts: dict[str, Any]) -> str | None:
        """An fp16 overflow repair's choice as a recipe (the ops it kept in fp32), like an `auto` plan's."""
        if not facts.get("kept_fp32_ops"):
            return super().recipe(build, handle, facts)
        from mobileclip_deploy.exporters.coreml import repair_recipe_text

        return repair_recipe_text(build.variant.name, build.tower, build.scheme.name,
                                  build.options["deployment_target"], facts)

    @staticmethod
    def _gate(build: Build):
        """The parity rule on the build's inputs: (passed, min cosine) of outputs against the folded model."""
        from mobileclip_deploy.exporters.parity import compare
        from mobileclip_deploy.exporters.schemes import parse_thresholds

        threshold = parse_thresholds(build.context.request.thresholds)[build.scheme.threshold_class]

        def gate(outputs: np.ndarray) -> tuple[bool, float]:
            cosine = compare(build.context.reference(build.tower)[: len(outputs)], outputs)["min_cosine"]
            return cosine >= threshold, cosine

        return gate

    def check(self, build: Build, path: Path, handle: Any) -> tuple[str, np.ndarray, dict[str, Any]]:
        from mobileclip_deploy.exporters import coreml as coreml_exp

        facts: dict[str, Any] = {}
        self.check_structure(path, build.tower, facts)
        if coreml_exp.can_predict() and self.input_kind(build) == "tensor":
            return "coreml_predict", run_batched(coreml_exp.runner(path, build.tower), build.inputs), facts
        name, out = self.program_check(build, path, facts)
        return name, out, facts

    def diagnose(self, path: Path, module: nn.Module, x: np.ndarray, tol: float, scheme: Scheme) -> dict[str, Any]:
        from mobileclip_deploy.verify.diagnose import coreml

        return coreml.compare(path, module, x, tol)

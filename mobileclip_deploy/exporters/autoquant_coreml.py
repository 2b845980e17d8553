"""`--quant auto` for Core ML and Core AI: 4-bit palettes (grouped per channel) with the layers that need it at 8
bits, chosen by the search of autoquant.py for the smallest weights that meet the targets.

Palettes change only weights, so a plan is scored on the PyTorch tower with its weights replaced by their
palettized values: the proxy every Core ML export is checked with here (coreml.decompressed_tower; Core ML does not
run on Linux). Both k-means implementations (coremltools' on the converted program, coreai-opt's on the PyTorch
tower) are seeded and run per weight, independent of the other weights' settings, so two passes (every conv/linear
weight at 4 bits, then at 8) give each weight's value in any plan; a candidate is assembled from them in PyTorch in
well under a second, instead of a compression pass per candidate. Core AI's chosen asset is then checked like any
other on Core AI's reference runtime (fp16 compute there: minutes per input for a text tower, too slow to score
candidates on). The cost is the weights' size: palette indices plus one fp16 palette per group of output channels
(`per_grouped_channel`), and fp16 for the weights palettes do not touch. Depthwise convs are units like the others
(palettes cost no compute to skip).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from mobileclip_deploy.exporters import coreml as coreml_exp
from mobileclip_deploy.exporters.autoquant import Plan, Targets, cached_search, search_key, unit_of
from mobileclip_deploy.exporters.parity import compare, run_batched, top1_agreement
from mobileclip_deploy.exporters.sensitive import eight_bit_params, float_modules, inside, is_depthwise

BASE_BITS, KEPT_BITS = 4, 8


def _palette_bytes(shape: tuple[int, ...], bits: int, group: int) -> int:
    """Indices at `bits` per weight plus one fp16 palette of 2**bits entries per `group` output channels."""
    return math.ceil(math.prod(shape) * bits / 8) + math.ceil(shape[0] / group) * 2**bits * 2


Palettized = Callable[[int], tuple[dict[str, np.ndarray], list[str]]]


class PaletteSearch:
    """One tower's search state: every weight's 4- and 8-bit palettized value and the fp32 reference outputs.

    `palettized(bits)` gives the tower's tensors as the format stores them with every compressible weight at `bits`
    palettes (decompressed), and the names of the weights compressed: Core ML's (coremltools, on the converted
    program) or Core AI's (coreai-opt, on the PyTorch tower); `group` output channels share one palette. Nodes are
    the parameter paths the palettes compress; a plan's module paths cover the parameters below them (a parameter
    owned by a module above other units, such as the text projection, is a unit of its own).
    """

    scheme, kind, kept_as = "pal4", "4-bit palette", "at 8 bits"
    baseline, cost_name = "fp16", "size_bytes"

    def __init__(self, backend: str, module: nn.Module, tower: str, inputs: np.ndarray, anchors: np.ndarray,
                 palettized: Palettized, group: int, step: Callable[[str], None]) -> None:
        self.backend, self.module, self.tower, self.inputs, self.anchors = backend, module, tower, inputs, anchors
        self.group = group
        self.values: dict[int, dict[str, np.ndarray]] = {}
        for bits in (BASE_BITS, KEPT_BITS):
            step(f"auto: {bits}-bit palettes for every weight")
            self.values[bits], self.compressed = palettized(bits)
        self.shapes = {n: tuple(p.shape) for n, p in module.named_parameters()}
        self.proxy = copy.deepcopy(module).float().eval()
        self.reference = self._outputs(module)

    def _outputs(self, module: nn.Module) -> np.ndarray:
        with torch.no_grad():
            return run_batched(lambda b: module(torch.from_numpy(b)).numpy(), self.inputs)

    def units(self) -> tuple[dict[str, list[str]], list[str]]:
        owners = {p: p.rpartition(".")[0] for p in self.compressed}
        grouped = {unit_of(o) for o in owners.values()}
        units: dict[str, list[str]] = {}
        for param, owner in owners.items():
            unit = unit_of(owner)
            if any(other != unit and inside(other, [unit]) for other in grouped):
                unit = param  # a module above other units: its own parameter is the unit
            units.setdefault(unit, []).append(param)
        depthwise = [n for n, m in self.module.named_modules() if is_depthwise(m)]
        return units, [p for p, owner in owners.items() if owner in depthwise]

    def nodes_in(self, scopes: list[str]) -> list[str]:
        return [p for p in self.compressed if coreml_exp._owned(p, scopes)]

    def decide_depthwise(self, depthwise: list[str], step) -> tuple[bool, dict]:
        return True, {"reason": "palettes cost no compute to skip; depthwise kernels are units like the others"}

    def hand_written(self) -> list[str]:
        """pal4's lists as one 8-bit set: the layers it keeps float and the weights it keeps at 8 bits."""
        return float_modules(self.module) + eight_bit_params(self.module)

    def score(self, exclude: list[str]) -> dict:
        """Output cosine and top-1 agreement of the tower with `exclude` at 8 bits and every other weight at 4."""
        kept = set(exclude)
        tensors = dict(self.proxy.named_parameters()) | dict(self.proxy.named_buffers())
        with torch.no_grad():
            for name, value in self.values[BASE_BITS].items():
                source = self.values[KEPT_BITS][name] if name in kept else value
                tensors[name].copy_(torch.from_numpy(np.ascontiguousarray(source, dtype=np.float32)))
        out = self._outputs(self.proxy)
        return {"min_cosine": round(compare(self.reference, out)["min_cosine"], 7),
                "top1_agreement": round(top1_agreement(self.reference, out, self.anchors), 4),
                "on": "weights_decompressed_in_pytorch"}

    def confirm(self, exclude: list[str]) -> None:
        """No second opinion here: the score is the check every Core ML export gets here (its decompressed weights in
        PyTorch); a Core AI asset is run on the reference runtime by the export's gate."""
        return None

    def cost(self, candidates: dict[str, list[str] | None]) -> dict[str, int]:
        """Weight bytes per candidate (None: every weight fp16)."""
        fp16 = sum(2 * math.prod(s) for s in self.shapes.values())
        out = {}
        for name, kept in candidates.items():
            if kept is None:
                out[name] = fp16
                continue
            palettes = sum(_palette_bytes(self.shapes[p], KEPT_BITS if p in kept else BASE_BITS, self.group)
                           for p in self.compressed)
            out[name] = fp16 - sum(2 * math.prod(self.shapes[p]) for p in self.compressed) + palettes
        return out


def search_coreml(module: nn.Module, example: torch.Tensor, tower: str, target: str, inputs: np.ndarray,
                  anchors: np.ndarray, targets: Targets, step: Callable[[str], None] = lambda _: None,
                  use_cache: bool = True) -> Plan:
    """Find the smallest Core ML 4/8-bit palette plan of `module` meeting `targets` on `inputs` (cached by content)."""

    def make(work) -> PaletteSearch:
        step("auto: converting to Core ML")
        ml = coreml_exp.convert(module, example, tower, "fp16", target, image_input=False)
        return PaletteSearch("coreml", module, tower, inputs, anchors,
                             lambda bits: coreml_exp.palettized_weights(ml, module, target, bits), coreml_exp.GROUP,
                             step)

    key = search_key(f"coreml-{target}", module, tower, np.zeros(0, np.float32), inputs, anchors, targets)
    return cached_search(key, make, targets, step, use_cache)


def search_coreai(module: nn.Module, example: torch.Tensor, tower: str, inputs: np.ndarray, anchors: np.ndarray,
                  targets: Targets, step: Callable[[str], None] = lambda _: None, use_cache: bool = True) -> Plan:
    """Find the smallest Core AI 4/8-bit palette plan of `module` (coreai-opt's PyTorch route, grouped palettes)
    meeting `targets` on `inputs`, scored on the tower with its weights replaced by their palettized values (the
    export's own gate then runs the asset on Core AI's reference runtime); cached by content."""
    from mobileclip_deploy.exporters.backends import coreai

    key = search_key("coreai", module, tower, np.zeros(0, np.float32), inputs, anchors, targets)
    return cached_search(key, lambda work: PaletteSearch(
        "coreai", module, tower, inputs, anchors, lambda bits: coreai.palettized_weights(module, example, bits),
        coreai.PALETTE_GROUP, step), targets, step, use_cache)

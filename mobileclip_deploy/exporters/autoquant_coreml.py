"""`--quant auto` for Core ML: 4-bit palettes (iOS18, grouped per channel) with the layers that need it at 8 bits,
chosen by the search of autoquant.py for the smallest weights that meet the targets.

Core ML does not run on Linux, and palettes change only weights, so a plan is scored on the PyTorch tower with its
weights replaced by their palettized values: the proxy every Core ML export is checked with here
(coreml.decompressed_tower). coremltools' k-means is seeded and runs per weight, independent of the other weights'
settings, so two passes (every conv/linear weight at 4 bits, then at 8) give each weight's value in any plan; a
candidate is assembled from them in PyTorch in well under a second, instead of a compression pass per candidate.
The cost is the weights' size: palette indices plus one fp16 palette per group of output channels (coremltools'
`per_grouped_channel`), and fp16 for the weights palettes do not touch. Depthwise convs are units like the others
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


def _palette_bytes(shape: tuple[int, ...], bits: int) -> int:
    """Indices at `bits` per weight plus one fp16 palette of 2**bits entries per group of output channels."""
    return math.ceil(math.prod(shape) * bits / 8) + math.ceil(shape[0] / coreml_exp.GROUP) * 2**bits * 2


class PaletteSearch:
    """One tower's search state: every weight's 4- and 8-bit palettized value and the fp32 reference outputs.

    Nodes are the parameter paths the palettes compress; a plan's module paths cover the parameters below them
    (a parameter owned by a module above other units, such as the text projection, is a unit of its own).
    """

    backend, scheme, kind, kept_as = "coreml", "pal4", "4-bit palette", "at 8 bits"
    baseline, cost_name = "fp16", "size_bytes"

    def __init__(self, module: nn.Module, example: torch.Tensor, tower: str, target: str, inputs: np.ndarray,
                 anchors: np.ndarray, step: Callable[[str], None]) -> None:
        self.module, self.tower, self.inputs, self.anchors = module, tower, inputs, anchors
        step("auto: converting to Core ML")
        ml = coreml_exp.convert(module, example, tower, "fp16", target, image_input=False)
        self.values: dict[int, dict[str, np.ndarray]] = {}
        for bits in (BASE_BITS, KEPT_BITS):
            step(f"auto: {bits}-bit palettes for every weight")
            self.values[bits], self.compressed = coreml_exp.palettized_weights(ml, module, target, bits)
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
        """The score is already the check every Core ML export gets here (its decompressed weights in PyTorch)."""
        return None

    def cost(self, candidates: dict[str, list[str] | None]) -> dict[str, int]:
        """Weight bytes per candidate (None: every weight fp16)."""
        fp16 = sum(2 * math.prod(s) for s in self.shapes.values())
        out = {}
        for name, kept in candidates.items():
            if kept is None:
                out[name] = fp16
                continue
            palettes = sum(_palette_bytes(self.shapes[p], KEPT_BITS if p in kept else BASE_BITS)
                           for p in self.compressed)
            out[name] = fp16 - sum(2 * math.prod(self.shapes[p]) for p in self.compressed) + palettes
        return out


def search_coreml(module: nn.Module, example: torch.Tensor, tower: str, target: str, inputs: np.ndarray,
                  anchors: np.ndarray, targets: Targets, step: Callable[[str], None] = lambda _: None,
                  use_cache: bool = True) -> Plan:
    """Find the smallest Core ML 4/8-bit palette plan of `module` meeting `targets` on `inputs` (cached by content)."""
    key = search_key(f"coreml-{target}", module, tower, np.zeros(0, np.float32), inputs, anchors, targets)
    return cached_search(key, lambda work: PaletteSearch(module, example, tower, target, inputs, anchors, step),
                         targets, step, use_cache)

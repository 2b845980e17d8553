"""`--quant auto` for LiteRT static int8 (ai-edge-quantizer, the w8a8 scheme of backends/litert.py): the search of
autoquant.py, every candidate quantized from one float `.tflite` and scored and timed on LiteRT's own runtime
(XNNPACK, 1 thread), as the ONNX search does on ONNX Runtime.

ai-edge-quantizer selects ops by a regex on their scope (output tensor names), which litert-torch builds from the
module stack (`backends/litert._owner`), so each op is traced back to the module path that owns it; a candidate is
the w8a8 recipe plus a `no_quantize` entry naming the ops kept float. Calibration runs once on the float model
(min/max ranges do not depend on what is excluded), so each candidate costs one quantizer pass (about a second for
S0) and one run over the inputs. Depthwise convs are not among the ops w8a8 quantizes here (see STATIC_OPS).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobileclip_deploy.exporters.autoquant import Plan, Targets, _Search, cached_search, group_units, search_key
from mobileclip_deploy.exporters.backends import litert


class LiteRTSearch(_Search):
    """One tower's search state: the float `.tflite`, its calibration results, the reference outputs on LiteRT.

    Nodes are op scopes (ai-edge-quantizer's names); plans name the module paths (or `module/OP_n` keys) that own
    them."""

    backend, runtime = "litert", "litert"

    def _graph(self) -> list[tuple[str, str, str]]:
        return litert.static_ops(self.raw, self.module)

    def _calibrate(self, calibration: np.ndarray) -> dict:
        return litert.calibrate(self.raw, litert.recipe_for("w8a8"), calibration, self.tower)

    def quantized(self, exclude: list[str]) -> Path:
        self._count += 1
        path = self.work / f"candidate{self._count % 2}.tflite"
        litert.quantize(self.raw, "w8a8", path, None, self.tower, exclude, qsvs=self.ranges)
        return path

    def units(self) -> tuple[dict[str, list[str]], list[str]]:
        return group_units(self.graph), []  # depthwise convs are not quantized ops here

    def nodes_in(self, modules: list[str]) -> list[str]:
        return litert.ops_in(self.graph, modules)


def search_litert(module: nn.Module, example: torch.Tensor, tower: str, calibration: np.ndarray, inputs: np.ndarray,
                  anchors: np.ndarray, targets: Targets, step: Callable[[str], None] = lambda _: None,
                  use_cache: bool = True, searched: Callable[[LiteRTSearch, Plan], None] = lambda s, p: None) -> Plan:
    """Find the fastest LiteRT static-int8 plan of `module` meeting `targets` on `inputs` (cached by content);
    `searched` as in `cached_search` (the search's float file is `search.raw`)."""

    def make(work: Path) -> LiteRTSearch:
        step("auto: converting with litert-torch and calibrating")
        litert.convert(module, example, tower, work / "raw.tflite")
        return LiteRTSearch(work / "raw.tflite", module, tower, calibration, inputs, anchors, work)

    key = search_key("litert", module, tower, calibration, inputs, anchors, targets)
    return cached_search(key, make, targets, step, use_cache, searched)

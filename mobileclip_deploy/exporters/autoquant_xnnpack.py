"""`--quant auto` for ExecuTorch XNNPACK static int8 (w8a8) and `auto-8da8w` for its dynamic int8: the search of
autoquant.py, scored in PyTorch.

An ExecuTorch export of S0's image tower takes minutes here, most of it lowering, so a search that exported every
candidate would take hours. PT2E's reference int8 model (prepare, calibrate, convert: the graph the XNNPACK
lowering consumes) runs in PyTorch in seconds, so each unit's sensitivity and each step of the search are scored
on it; one export and one calibration serve every candidate (copied, then quantized). Only the plans that meet
the targets are exported and scored again on the ExecuTorch runtime's outputs, which decide (where XNNPACK's
arithmetic misses a target the simulation met, more units stay float), then timed on it at 1 thread; the chosen
one's .pte is the artifact the pipeline writes.
Depthwise convs stay float, as in the hand-written w8a8 (sensitive.py): they are split for XNNPACK
(xnnpack_depthwise.py), and their int8 form runs 1.5-2.6x slower than that on an avx2 host
(benchmarks/depthwise_xnnpack.py).
Dynamic int8 (8da8w: torchao, linears only) is scored on the torchao-quantized module itself, in eager PyTorch.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobileclip_deploy import runtimes
from mobileclip_deploy.exporters import executorch as et_exp
from mobileclip_deploy.exporters.autoquant import Plan, Targets, cached_search, interleaved_ms, search_key, unit_of
from mobileclip_deploy.exporters.parity import compare, top1_agreement
from mobileclip_deploy.exporters.sensitive import float_modules, inside, is_depthwise
from mobileclip_deploy.exporters.xnnpack_depthwise import split_depthwise

QUANTIZED_OPS = (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)  # what executorch.static_int8 takes


def _score(reference: np.ndarray, out: np.ndarray, anchors: np.ndarray, on: str) -> dict:
    return {"min_cosine": round(compare(reference, out)["min_cosine"], 7),
            "top1_agreement": round(top1_agreement(reference, out, anchors), 4), "on": on}


class XnnpackSearch:
    """One tower's search state: its export, the calibration and scoring inputs, the fp32 reference outputs.

    Nodes are the module paths that own a conv or linear op of the exported graph; a plan keeps float the
    modules it names and everything below them, as `executorch.static_int8` does.
    """

    backend, kind, kept_as, baseline, cost_name = "executorch-xnnpack", "int8", "float", "fp32", "latency_ms"

    def __init__(self, module: nn.Module, example: torch.Tensor, tower: str, calibration: np.ndarray,
                 inputs: np.ndarray, anchors: np.ndarray, work: Path, scheme: str = "w8a8") -> None:
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(1)  # timed at 1 thread; process-wide, set before any method loads
        self.module, self.example, self.tower, self.work, self.scheme = module, example, tower, work, scheme
        self.calibration, self.inputs, self.anchors = calibration, inputs, anchors
        self._methods: dict[tuple[str, ...] | None, runtimes.Runner] = {}
        self._exported: dict[tuple[str, ...], tuple[Path, dict]] = {}  # each int8 candidate's .pte and export facts
        self.split = split_depthwise(module)  # the form every XNNPACK export quantizes (module paths kept)
        with torch.no_grad():
            self.graph = torch.export.export(self.split, (example,)).module() if scheme == "w8a8" else None
            self.reference = self._outputs(module)
            # Calibrated once: every plan's observers are among these (S0 image, 16 photos: 6.8 s per scored
            # plan instead of 14.5 here).
            self.ranges = None if self.graph is None else et_exp.calibrated_ranges(copy.deepcopy(self.graph),
                                                                                   calibration)
        if self.graph is None:  # dynamic int8 quantizes nn.Linear modules only
            self.owners = [n for n, m in self.split.named_modules() if isinstance(m, nn.Linear)]
        else:
            self.owners = list(dict.fromkeys(et_exp._module_path(n) for n in self.graph.graph.nodes
                                             if n.op == "call_function" and n.target in QUANTIZED_OPS))

    def _outputs(self, module: nn.Module) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([module(torch.from_numpy(self.inputs[i : i + 1])).numpy()
                                   for i in range(len(self.inputs))])

    def units(self) -> tuple[dict[str, list[str]], list[str]]:
        """Op-owning module paths grouped by unit, and the depthwise ones among them.

        A unit that contains another (ops of a module above a numbered container) absorbs it: keeping the
        outer one float keeps everything below it float too.
        """
        owners = self.owners
        grouped: dict[str, list[str]] = {}
        for owner in owners:
            grouped.setdefault(unit_of(owner), []).append(owner)
        units: dict[str, list[str]] = {}
        for unit, nodes in grouped.items():
            outer = next((u for u in grouped if u != unit and inside(unit, [u])), unit)
            units.setdefault(outer, []).extend(nodes)
        depthwise = [n for n, m in self.module.named_modules() if is_depthwise(m)]
        return units, [o for o in owners if inside(o, depthwise)]

    def nodes_in(self, modules: list[str]) -> list[str]:
        return modules  # module paths are this backend's nodes already

    def decide_depthwise(self, depthwise: list[str], step) -> tuple[bool, dict]:
        return False, {"reason": "kept float as in the hand-written w8a8; their int8 form is slower on avx2 "
                                 "(benchmarks/depthwise_xnnpack.py)"}

    def score(self, exclude: list[str]) -> dict:
        """Output cosine and top-1 agreement of PT2E's reference int8 model (static) or of the torchao-quantized
        module (dynamic) with `exclude` left float."""
        with torch.no_grad():
            if self.graph is not None:
                model = et_exp.static_int8(copy.deepcopy(self.graph), self.calibration, exclude, self.ranges)
            else:
                model = et_exp._quantize(self.split, self.example, self.scheme, None, exclude, set())
        return _score(self.reference, self._outputs(model), self.anchors, "pytorch_reference_int8")

    def _method(self, exclude: list[str] | None) -> runtimes.Runner:
        """The ExecuTorch runner of this plan (None: fp32), exported once and kept for scoring and timing."""
        key = None if exclude is None else tuple(exclude)
        if key not in self._methods:
            path = self.work / f"candidate{len(self._methods)}.pte"
            with torch.no_grad():
                facts, _ = et_exp.export(self.module, self.example, "fp32" if exclude is None else self.scheme,
                                         "xnnpack", path, self.calibration, keep=exclude)
            if key is not None:
                self._exported[key] = path, facts
            self._methods[key] = runtimes.load(path, runtime="executorch")
        return self._methods[key]

    def write_chosen(self, plan: Plan, path: Path) -> dict | None:
        """Copy the .pte this search exported for `plan` to `path` and return its export facts (None: not exported).

        A candidate is `plan` when it leaves the same convs and linears float: the search names op-owning
        modules, the plan their units.
        """
        def kept(names) -> list[str]:
            return [o for o in self.owners if inside(o, list(names))]

        wanted = kept(plan.keep)
        for key, (pte, facts) in self._exported.items():
            if kept(key) == wanted:
                shutil.copyfile(pte, path)
                return {**facts, "kept_in_float": plan.keep}
        return None

    def confirm(self, exclude: list[str]) -> dict:
        """The plan's score on the ExecuTorch runtime's own outputs (XNNPACK's int8 arithmetic, not PT2E's)."""
        out = self._method(exclude).batched(self.inputs)
        return _score(self.reference, out, self.anchors, "executorch_runtime")

    def hand_written(self) -> list[str]:
        return float_modules(self.module)

    def cost(self, candidates: dict[str, list[str] | None]) -> dict[str, float]:
        """Median ms per candidate (None: fp32) on the ExecuTorch runtime at 1 thread, in interleaved rounds."""
        first = self.inputs[:1]
        return interleaved_ms({name: lambda r=self._method(exclude): r(first)
                               for name, exclude in candidates.items()})


def search_executorch(module: nn.Module, example: torch.Tensor, tower: str, calibration: np.ndarray,
                      inputs: np.ndarray, anchors: np.ndarray, targets: Targets,
                      step: Callable[[str], None] = lambda _: None, use_cache: bool = True,
                      scheme: str = "w8a8", searched: Callable[[XnnpackSearch, Plan], None] = lambda s, p: None
                      ) -> Plan:
    """Find the fastest XNNPACK int8 plan (`scheme`: static w8a8 or dynamic 8da8w) of `module` meeting `targets` on
    `inputs` (cached by content); `searched` as in `cached_search`."""

    def make(work: Path) -> XnnpackSearch:
        step("auto: exporting the float graph")
        return XnnpackSearch(module, example, tower, calibration, inputs, anchors, work, scheme)

    key = search_key(f"executorch-xnnpack-{scheme}", module, tower, calibration, inputs, anchors, targets)
    return cached_search(key, make, targets, step, use_cache, searched)


def search_and_export(module: nn.Module, example: torch.Tensor, tower: str, calibration: np.ndarray,
                      inputs: np.ndarray, anchors: np.ndarray, targets: Targets, path: Path,
                      step: Callable[[str], None] = lambda _: None, use_cache: bool = True,
                      scheme: str = "w8a8") -> tuple[Plan, dict]:
    """`search_executorch`, and the chosen plan's .pte at `path` with its export facts.

    A search that runs has exported and confirmed the chosen plan already (minutes for S0's image tower), so
    that .pte is copied; a cached plan is exported again.
    """
    written: dict = {}

    def keep_chosen(search: XnnpackSearch, plan: Plan) -> None:
        written.update(search.write_chosen(plan, path) or {})

    plan = search_executorch(module, example, tower, calibration, inputs, anchors, targets, step, use_cache, scheme,
                             searched=keep_chosen)
    if written:
        return plan, written
    step("exporting the chosen plan")
    facts, _ = et_exp.export(module, example, scheme, "xnnpack", path, calibration, keep=plan.keep)
    return plan, facts

"""Core AI: the asset's program lowered again with debug info and run on the Linux reference runtime with an
intermediate logger (coreai-torch's `CoreAIInspector`, without the macOS-only specialization options), each Core AI
op's output tied to its PyTorch module through the module call stack the converter records in the op's debug location
(`ConvMlp$2`: the second ConvMlp instance in the exported graph's node order, numbered as coreai-torch numbers them)."""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobileclip_deploy.verify.diagnose import (
    Record,
    Trace,
    first_divergence,
    relative_error,
    torch_trace,
)

_CALL_STACK = re.compile(r'"call_stack": \[([^\]]*)\]')


def instances(module: nn.Module, x: np.ndarray) -> dict[str, str]:
    """`Class$N` -> module path, numbered as coreai-torch numbers a program's modules: per class, in the order the
    exported graph's nodes first reach each module instance (`_ModuleInstanceRegistry`)."""
    with torch.no_grad():
        graph = torch.export.export(module, (torch.from_numpy(x),)).graph
    counts: dict[str, int] = {}
    found: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    for node in graph.nodes:
        for path, kind in (node.meta.get("nn_module_stack") or {}).values():
            kind = kind if isinstance(kind, str) else kind.__name__
            cls = kind.rpartition(".")[2]
            if (path, cls) in seen:
                continue
            seen.add((path, cls))
            counts[cls] = counts.get(cls, 0) + 1
            found[f"{cls}${counts[cls]}"] = path
    return found


def call_stacks(program) -> dict[int, list[str]]:
    """Core AI op id -> its module call stack, innermost first, from the ops' debug locations."""
    from coreai_torch.debugging.debug_info import get_operation_id
    from coreai_torch.debugging.torch_utils import WalkResult

    stacks: dict[int, list[str]] = {}

    def visit(operation) -> WalkResult:
        op_id = get_operation_id(operation, "coreai")
        if op_id is not None:
            match = _CALL_STACK.search(str(operation.location))
            if match:
                stacks[op_id] = re.findall(r'"([^"]+)"', match[1])
        return WalkResult.ADVANCE

    program._module._mlir_module.operation.walk(visit)
    return stacks


async def _intermediates(path: Path, x: np.ndarray, op_ids: list[int]) -> dict[int, list[np.ndarray | None] | None]:
    """The outputs of `op_ids` on the reference runtime: the asset lowered with debug info (what `executable()` does
    on Linux, debug info on), then run with coreai-torch's intermediate logger."""
    from coreai.authoring.asset import AIModelAsset
    from coreai.runtime import AIModel
    from coreai_torch.debugging.inspector import CoreAIInspector

    from mobileclip_deploy.runtimes.coreai import FUNCTION

    with tempfile.TemporaryDirectory(suffix=".aimodelx") as folder:
        await asyncio.to_thread(AIModelAsset.load(str(path))._write_odix, Path(folder), enable_debug_info=True)
        model = await AIModel.load(path=folder, specialization_options=None)
        inspector = CoreAIInspector(model=model, function_name=FUNCTION)
        (name,) = model.load_function(FUNCTION).desc.input_names
        return await inspector.get_intermediates_for_ops(op_ids, {name: x})


def records(path: Path, module: nn.Module, x: np.ndarray) -> tuple[Trace, list[Record]]:
    """The PyTorch trace of `module` on `x` and, in the program's order, each traced module's Core AI value closest to
    its PyTorch output, read from the asset at `path` on the reference runtime (one run).

    Any op may be the one that materializes a module's output: the converter's debug info attributes some ops to a
    neighbouring module (a residual add to the linear before it) and a module's last own op need not be its output
    (an attention's output comes from its projection). The runtime's values carry no data input."""
    from coreai.authoring.asset import AIModelAsset
    from coreai_torch.debugging.torch_utils import get_torch_to_coreai_output_mapping

    trace = torch_trace(module, x)
    paths = instances(module, x)
    program = AIModelAsset.load(str(path)).program
    stacks = call_stacks(program)
    ops = []  # (Core AI op id, output index, the modules whose subtree computes it), in the torch graph's order
    for mapping in sorted(get_torch_to_coreai_output_mapping(program).values(), key=lambda m: m.source_op_id):
        owners = [paths[level] for level in stacks.get(mapping.target_op_id, []) if paths.get(level) in trace.outputs]
        if owners:
            ops.append((mapping.target_op_id, mapping.target_output, owners))
    runtime_x = x.astype(np.int32) if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32)
    values = asyncio.run(_intermediates(path, runtime_x, sorted({op for op, _, _ in ops})))
    candidates: dict[str, list[tuple[str, np.ndarray]]] = {}
    position: dict[str, int] = {}
    for index, (op, output, owners) in enumerate(ops):
        outputs = values.get(op)
        if not outputs or output >= len(outputs) or outputs[output] is None:
            continue
        for owner in owners:
            candidates.setdefault(owner, []).append((f"coreai op {op}", np.asarray(outputs[output], np.float32)))
            position[owner] = index
    found: list[Record] = []
    for owner in sorted(candidates, key=lambda name: (position[name], trace.order.index(name))):
        scored = [(error, op, value) for op, value in candidates[owner]
                  if (error := _error(value, trace.expected(owner))) is not None]
        if scored:
            _, op, value = min(scored, key=lambda item: item[0])
            found.append((owner, op, value, None))
    return trace, found


def compare(path: Path, module: nn.Module, x: np.ndarray, tol: float) -> dict[str, Any]:
    """The first module none of whose Core AI ops (its own and its submodules') computes its PyTorch output; a
    departure names the modules run since the last module that agreed."""
    trace, found = records(path, module, x)
    return first_divergence(trace, found, tol)


def _error(value: np.ndarray, expected: list[np.ndarray]) -> float | None:
    errors = [e for e in (relative_error(value, ref) for ref in expected) if e is not None]
    return min(errors) if errors else None

"""ExecuTorch XNNPACK: layers localised on a twin of the artifact, not on the saved file.

The saved `.pte` cannot show its insides: one XNNPACK partition holds a whole tower, and an ETDump of it carries
per-op timings but tensors only at the delegate call's boundary (the tiny image tower: 228 delegated nodes, 239
events, values only for the partition's input and output). So the tower is lowered again by the exporter's own code
(exporters/executorch.lower: the same scheme, quantization and depthwise rewrite, the same partitioner) with each
module's output and first input tapped as extra program outputs (executorch.devtools' intermediate-output tap, placed
before partitioning: the twin keeps the artifact's partitions), run on ExecuTorch's runtime and compared with PyTorch.
The twin stands for the artifact only when its final output reproduces the saved file's on the same input within
FAITHFUL; otherwise no layer is named. A defect of the lowering (a converter or rewrite bug) is in both; one that
only the saved file has (a file built from other weights or by other code) makes the twin unfaithful.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.verify.diagnose import (
    Record,
    first_divergence,
    relative_error,
    torch_trace,
)

# Relative error within which the twin's final output must reproduce the saved artifact's: the same lowering on the
# same input computes the same numbers up to float summation order (measured 0 on the tiny tower at fp32).
FAITHFUL = 1e-5


def _taps(graph: torch.fx.Graph, modules: set[str], user_inputs: set[str]) -> tuple[dict[str, torch.fx.Node],
                                                                                     dict[str, torch.fx.Node]]:
    """(module -> the node computing its output, module -> the node feeding its first op) for the `modules` the
    exported graph's nodes run in (`nn_module_stack`; the depthwise rewrite's inner modules count as the conv they
    replace). A module's output is its last node, its input the first tensor argument of its first node."""
    last: dict[str, torch.fx.Node] = {}
    first: dict[str, torch.fx.Node] = {}
    for node in graph.nodes:
        if node.op != "call_function" or not isinstance(node.meta.get("val"), torch.Tensor):
            continue
        for path, _ in (node.meta.get("nn_module_stack") or {}).values():
            if path not in modules:
                continue
            if path not in last:
                data = next((a for a in node.args if isinstance(a, torch.fx.Node)
                             and isinstance(a.meta.get("val"), torch.Tensor)
                             and (a.op == "call_function" or a.name in user_inputs)), None)
                if data is not None:
                    first[path] = data
            last[path] = node
    return last, first


def compare(path: Path, module: nn.Module, x: np.ndarray, tol: float, scheme: str) -> dict[str, Any]:
    """The first module whose output departs from PyTorch's in the twin of the artifact at `path` (lowered at
    `scheme`), after checking that the twin computes what the file does."""
    from executorch.runtime import Runtime as EtRuntime

    from mobileclip_deploy import runtimes
    from mobileclip_deploy.exporters import executorch as et_exp

    trace = torch_trace(module, x)
    saved = runtimes.load(path, threads=1, runtime="executorch")(x)  # sets the process-wide threadpool to 1
    example = torch.from_numpy(x)
    taps: dict[str, dict[str, Any]] = {}

    def tap(program: torch.export.ExportedProgram) -> Callable[[torch.fx.Node], bool]:
        taps["last"], taps["first"] = _taps(program.graph, set(trace.outputs), set(program.graph_signature.user_inputs))
        taps["order"] = {node.name: i for i, node in enumerate(program.graph.nodes)}
        wanted = {*taps["last"].values(), *taps["first"].values()} - set(program.graph.find_nodes(op="placeholder"))
        return wanted.__contains__

    edge, _, specs = et_exp.lower(module, example, scheme, "xnnpack", None, tap=tap)
    with torch.no_grad():
        buffer = edge.to_executorch().buffer
    outputs = EtRuntime.get().load_program(buffer).load_method("forward").execute([example])
    twin = np.asarray(outputs[0], np.float32)
    gap = relative_error(twin, saved)
    if gap is None or gap > FAITHFUL:
        raise UserError(f"{Path(path).name}: no layer named: diagnose localises XNNPACK layers on a twin (this tower "
                        f"lowered again as the export lowers {scheme}), and the twin does not reproduce the artifact "
                        f"(relative error {'shape differs' if gap is None else f'{gap:.3g}'} > {FAITHFUL:g} on the "
                        "same input): the file was not lowered from this tower as the export lowers it by default "
                        "(other weights or code, or a recipe's float layers)")
    values = {spec.node_name: np.asarray(outputs[spec.output_index], np.float32) for spec in specs}
    last, first, order = taps["last"], taps["first"], taps["order"]
    records: list[Record] = []
    for owner in sorted(last, key=lambda m: (order[last[m].name], trace.order.index(m))):
        data = first.get(owner)
        data_value = None if data is None else (x if data.op == "placeholder" else values.get(data.name))
        records.append((owner, last[owner].name, values[last[owner].name], data_value))
    found = first_divergence(trace, records, tol)
    return {**found, "note": f"localised on a twin of the artifact (the tower lowered again the same way, {scheme}, "
            "with each module's output tapped as a program output; its output reproduced the saved file's within "
            f"relative error {gap:.2g}), not on the saved file, whose XNNPACK partition hides its intermediate values"}

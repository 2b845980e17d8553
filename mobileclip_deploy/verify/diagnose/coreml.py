"""Core ML: the saved program executed op by op (runtimes/coreml_program.py); each conv/linear/matmul op is tied to its
module through the weight it reads (the converter names weights `p_<module path>_weight`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mobileclip_deploy.verify.diagnose import Record, first_divergence, torch_trace


def compare(path: Path, module: nn.Module, x: np.ndarray, tol: float) -> dict[str, Any]:
    """The first weighted op of the executed program that departs from its PyTorch module."""
    from mobileclip_deploy.exporters.coreml import _image_input, _strip
    from mobileclip_deploy.runtimes.coreml_program import Program

    trace = torch_trace(module, x)
    params = {"p_" + name.replace(".", "_"): name.rpartition(".")[0] for name, _ in module.named_parameters()}
    program = Program.load(path)
    producers = {op.outputs[0].name: op for op in program.ops}

    def module_of(op) -> str | None:
        for var in op.get_flattened_inputs():
            source = producers.get(var.name)
            if source is not None and (source.op_type == "const" or source.op_type.startswith("constexpr_")):
                owner = params.get(_strip(var.name).removesuffix("_palettized"))
                if owner is not None:
                    return owner
        return None

    seen: list[Record] = []

    def observe(_index: int, op, values: dict[str, Any]) -> None:
        owner = module_of(op) if op.op_type in ("conv", "linear", "matmul") else None
        if owner is not None and owner in trace.outputs:
            data = op.inputs.get("x")
            seen.append((owner, op.name, np.asarray(values[op.outputs[0].name], np.float32),
                         None if data is None else np.asarray(values[data.name], np.float32)))

    scale = 255.0 if _image_input(path) else 1.0
    program.run({program.input_names[0]: x * scale if scale != 1.0 else x}, observe=observe)
    return first_divergence(trace, seen, tol)

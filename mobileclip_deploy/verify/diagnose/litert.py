"""LiteRT: every intermediate tensor kept by the Interpreter (`experimental_preserve_all_tensors`, which runs each
op as its own XNNPACK partition) and tied to its module by the name litert-torch gives it: the module scope of the
op that produced it, `<class>_<attribute>` per level (`.../ConvMlp_mlp/GELU_act;1`), several scopes joined by `;;`
where the converter fused ops (a conv with the ReLU after it is named after the ReLU, then the conv)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mobileclip_deploy.verify.diagnose import (
    Record,
    first_divergence,
    relative_error,
    torch_trace,
)

_SUFFIX = re.compile(r";[^/]*$")  # litert-torch numbers the ops of a scope (`scope;3`), the quantizer marks its own (`;3_dequant`)


def module_path(location: str, root: nn.Module) -> str | None:
    """The module path (in `root`, the tower) of one litert-torch scope, or None outside the tower.

    A scope lists the modules whose forward ran (`<module>.<class>_<attribute>` each), beginning with the converter's
    wrapper and the tower; a module reached without calling its parents (`self.model.visual.trunk(x)`) is found
    among the current module's descendants by class and attribute. Levels below a module `root` does not have (the
    depthwise rewrite's internals) are dropped, so a rewritten conv keeps its original path."""
    path, module = "", root
    for level in _SUFFIX.sub("", location).split("/")[2:]:
        found = [(name, sub) for name, sub in module.named_modules() if name
                 and level == f"{type(sub).__module__}.{type(sub).__name__}_{name.rpartition('.')[2]}"]
        found = found or [(name, sub) for name, sub in module.named_children() if level.endswith("_" + name)]
        if not found:
            break
        name, module = min(found, key=lambda item: len(item[0]))
        path = f"{path}.{name}" if path else name
    return path or None


def _in_torch_layout(value: np.ndarray, reference: np.ndarray) -> np.ndarray | None:
    """`value` in PyTorch's layout (LiteRT keeps image activations NHWC), or None when it is not that tensor. When
    both layouts fit (H = W = C) the closer one is taken."""
    candidates = [value] if value.shape == reference.shape else []
    if value.ndim == 4 and value.transpose(0, 3, 1, 2).shape == reference.shape:
        candidates.append(value.transpose(0, 3, 1, 2))
    if not candidates:
        return None
    return min(candidates, key=lambda c: relative_error(c, reference))


def _value(interp, detail: dict[str, Any]) -> np.ndarray:
    """A tensor as floats: static int8 activations dequantized with their scale and zero point."""
    value = interp.get_tensor(detail["index"])
    scale, zero = detail["quantization"]
    if np.issubdtype(value.dtype, np.integer) and scale:
        return (value.astype(np.float32) - zero) * scale
    return value.astype(np.float32)


def compare(path: Path, module: nn.Module, x: np.ndarray, tol: float) -> dict[str, Any]:
    """The first module whose last tensor departs from its PyTorch output."""
    from mobileclip_deploy.runtimes.litert import interpreter

    trace = torch_trace(module, x)
    interp = interpreter(path, preserve_all_tensors=True)
    interp.allocate_tensors()
    feed = interp.get_input_details()[0]
    interp.set_tensor(feed["index"], x.astype(feed["dtype"]))
    interp.invoke()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    ops = [op for op in interp._get_ops_details() if op["op_name"] != "DELEGATE"]
    produced = {int(t) for op in ops for t in op["outputs"]} | {int(feed["index"])}
    paths: dict[str, str | None] = {}

    def owners(tensor: int) -> list[str]:
        found = []
        for location in details[tensor]["name"].split(";;"):
            if location not in paths:
                paths[location] = module_path(location, module)
            if paths[location] is not None and paths[location] in trace.outputs:
                found.append(paths[location])
        return found

    last: dict[str, tuple[str, int]] = {}  # module -> (its last op, that op's output tensor), in op order
    first_input: dict[str, tuple[int, str]] = {}  # module -> (its first op's data input, the module that input feeds)
    for op in ops:
        out = int(op["outputs"][0])
        names = owners(out)
        if not names:
            continue
        data = next((int(t) for t in op["inputs"] if int(t) in produced), None)
        if data is not None:
            first_input.setdefault(names[0], (data, names[-1]))
        last.pop(names[0], None)
        last[names[0]] = (f"{op['op_name']}#{op['index']}", out)
    records: list[Record] = []
    input_of: dict[str, str] = {}  # op -> the module its data input feeds (a fused chain's first module)
    for owner, (op, out) in last.items():
        value = _in_torch_layout(_value(interp, details[out]), trace.outputs[owner])
        if value is None:
            continue
        data, fed = first_input.get(owner, (None, owner))
        input_of[op] = fed
        data_value = None if data is None or fed not in trace.inputs else _in_torch_layout(
            _value(interp, details[data]), trace.inputs[fed])
        records.append((owner, op, value, data_value))
    return first_divergence(trace, records, tol, input_of=input_of)

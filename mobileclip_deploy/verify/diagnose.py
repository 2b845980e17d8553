"""Where an artifact first departs from the folded PyTorch model: compared op by op, named by PyTorch module path.

A final cosine says *that* an artifact is wrong; this says *where*. PyTorch's side is every module's input and
output (forward hooks, in execution order). The artifact's side is what its runtime computed inside:
- Core ML: the saved program executed op by op (runtimes/coreml_program.py); each conv/linear op is mapped back to
  its module through the weight it reads (the converter names weights `p_<module path>_weight`), and compared at
  its input and output. An op whose input agrees but output does not is the culprit; one whose input already
  disagrees (while the previous weighted op's output agreed) points at the modules run in between.
- ONNX Runtime: the same for each node reading a `<module path>.weight` initializer (the saved, ORT-optimized
  file keeps the torch exporter's weight names but not its module scopes), its output and data input exposed as
  graph outputs.
The first module whose relative error (||a - b|| / ||b||) exceeds the precision's tolerance is named.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

# Relative error a healthy artifact stays under at every module, by the bits its scheme computes or stores at.
TOLERANCES = {32: 1e-3, 16: 3e-2, 8: 0.1}
LOW_BIT_TOLERANCE = 0.3


# What ONNX Runtime's fused Conv/Gemm apply after the product (their `activation` attribute).
_ACTIVATIONS = {"Relu": lambda v: np.maximum(v, 0), "Sigmoid": lambda v: 1 / (1 + np.exp(-v)), "Tanh": np.tanh}


def tolerance(bits: int) -> float:
    return TOLERANCES.get(bits, LOW_BIT_TOLERANCE)


@dataclass
class Trace:
    """PyTorch modules in the order they finished, with their first input and their output."""

    order: list[str] = field(default_factory=list)
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    leaves: set[str] = field(default_factory=set)


@contextmanager
def _hooks(module: nn.Module, trace: Trace) -> Iterator[None]:
    handles = []
    for name, sub in module.named_modules():
        if not name:
            continue
        if not any(True for _ in sub.children()):
            trace.leaves.add(name)

        def hook(_m, args, out, name=name) -> None:
            if name in trace.outputs or not isinstance(out, torch.Tensor):
                return  # a module called twice keeps its first call
            trace.order.append(name)
            first = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if first is not None:
                trace.inputs[name] = first.detach().float().numpy().copy()
            trace.outputs[name] = out.detach().float().numpy().copy()

        handles.append(sub.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def torch_trace(module: nn.Module, x: np.ndarray) -> Trace:
    trace = Trace()
    with _hooks(module, trace), torch.no_grad():
        module(torch.from_numpy(x))
    return trace


def relative_error(candidate: np.ndarray, reference: np.ndarray) -> float | None:
    """||a - b|| / ||b||, or None when the two are not the same tensor (sizes differ)."""
    a, b = np.asarray(candidate, np.float64), np.asarray(reference, np.float64)
    if a.size != b.size:
        return None
    a, b = a.reshape(-1), b.reshape(-1)
    if not np.isfinite(a).all():
        return float("inf")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _divergence(module: str, error: float, where: str, op: str, tol: float) -> dict[str, Any]:
    return {"module": module, "relative_error": error, "where": where, "op": op, "tolerance": tol}


def _between(trace: Trace, after: str | None, before: str | None) -> list[str]:
    """Leaf modules PyTorch ran after module `after` finished and before module `before` started (to the end when
    `before` is None)."""
    start = trace.order.index(after) + 1 if after in trace.order else 0
    end = trace.order.index(before) if before is not None else len(trace.order)
    return [n for n in trace.order[start:end] if n in trace.leaves and not (before and n.startswith(before + "."))]


def _first_divergence(trace: Trace, records: list[tuple[str, str, np.ndarray, np.ndarray | None]],
                      tol: float, fused: dict[str, Any] | None = None) -> dict[str, Any]:
    """The first record (module, op, output, data input; in the artifact's order) whose output departs from its
    module's. A runtime may fuse the activation that follows a module into its op (`fused`: op -> that activation
    as a numpy function): such an op is compared with the activation of its module's output, and a divergence
    inside it names the module and the activation module PyTorch ran next."""
    fused = fused or {}
    previous = None
    compared = 0
    for owner, op, value, data in records:
        expected = fused[op](trace.outputs[owner]) if op in fused else trace.outputs[owner]
        out_err = relative_error(value, expected)
        if out_err is None:
            continue
        compared += 1
        following = _between(trace, owner, None)[:1]
        if out_err > tol:
            in_err = None if data is None or owner not in trace.inputs else relative_error(data, trace.inputs[owner])
            if in_err is not None and in_err <= tol:
                return _divergence(", ".join([owner, *following] if op in fused else [owner]), out_err, "inside",
                                   op, tol)
            between = _between(trace, previous, owner)
            return _divergence(", ".join(between) if between else owner, out_err,
                               f"between {previous or 'the input'} and {owner}", op, tol)
        previous = owner
    return {"module": None, "compared": compared, "tolerance": tol}


def coreml(path: Path, module: nn.Module, x: np.ndarray, tol: float) -> dict[str, Any]:
    """The first weighted op (conv/linear) of the executed program that departs from its PyTorch module."""
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

    seen: list[tuple[str, str, np.ndarray, np.ndarray | None]] = []  # module, op, output, data input

    def observe(_index: int, op, values: dict[str, Any]) -> None:
        owner = module_of(op) if op.op_type in ("conv", "linear", "matmul") else None
        if owner is not None and owner in trace.outputs:
            data = op.inputs.get("x")
            seen.append((owner, op.name, np.asarray(values[op.outputs[0].name], np.float32),
                         None if data is None else np.asarray(values[data.name], np.float32)))

    scale = 255.0 if _image_input(path) else 1.0
    program.run({program.input_names[0]: x * scale if scale != 1.0 else x}, observe=observe)
    return _first_divergence(trace, seen, tol)


def onnx(path: Path, module: nn.Module, x: np.ndarray, tol: float) -> dict[str, Any]:
    """The first weighted node (its weight initializer is named `<module path>.weight`) that departs from its
    module; every weighted node's output and data input are exposed as graph outputs."""
    import onnx as onnx_lib

    from mobileclip_deploy.runtimes.onnxruntime import session

    trace = torch_trace(module, x)
    model = onnx_lib.load(str(path))
    initializers = {i.name for i in model.graph.initializer}
    # A separate bias node (MatMul + Add, Mul + Add) ends the module: compare after it.
    bias_node = {name: node for node in model.graph.node for name in node.input if name.endswith(".bias")}
    weighted = []  # (module, node name, output, data input)
    for node in model.graph.node:
        owner = next((name.rpartition(".")[0] for name in node.input if name in initializers
                      and name.removesuffix("_quantized").endswith(".weight")), None)
        if owner is not None and owner in trace.outputs and node.output:
            last = bias_node.get(owner + ".bias", node)
            weighted.append((owner, last.name, last.output[0], node.input[0]))
    existing = {o.name for o in model.graph.output}
    wanted = sorted({n for _, _, out, data in weighted for n in (out, data)} - existing - initializers
                    - {i.name for i in model.graph.input})
    model.graph.output.extend(onnx_lib.ValueInfoProto(name=name) for name in wanted)
    exposed = Path(path).with_name(f".{Path(path).stem}.diagnose.onnx")
    onnx_lib.save(model, str(exposed))
    try:
        sess = session(exposed, level="ORT_DISABLE_ALL")
        feed = sess.get_inputs()[0].name
        names = [o.name for o in sess.get_outputs()]
        values = dict(zip(names, sess.run(names, {feed: x}))) | {feed: x}
    finally:
        exposed.unlink(missing_ok=True)
    fused = {n.name: _ACTIVATIONS.get(a.s.decode(), lambda v: v) for n in model.graph.node for a in n.attribute
             if a.name == "activation"}
    return _first_divergence(trace, [(owner, name, values[out], values.get(data)) for owner, name, out, data
                                     in weighted], tol, fused)


SUFFIXES = (".mlpackage", ".onnx")


def diagnose(path: Path, module: nn.Module, x: np.ndarray, bits: int) -> dict[str, Any]:
    """Compare the artifact at `path` with `module` (the affine-folded tower it was exported from) on one input."""
    suffix = Path(path).suffix
    tol = tolerance(bits)
    if suffix == ".mlpackage":
        return {"backend": "coreml", **coreml(path, module, x, tol)}
    if suffix == ".onnx":
        return {"backend": "onnx", **onnx(path, module, x, tol)}
    from mobileclip_deploy.errors import UserError

    raise UserError(f"{Path(path).name}: diagnose compares {' and '.join(SUFFIXES)} artifacts; {suffix} is not "
                    "supported yet")

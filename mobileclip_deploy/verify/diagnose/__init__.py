"""Where an artifact first departs from the folded PyTorch model: compared op by op, named by PyTorch module path.

A final cosine says *that* an artifact is wrong; this says *where*. PyTorch's side is every module's input and
output (forward hooks, in execution order). The artifact's side is what its runtime computed inside, read by
the backend that wrote it (`Backend.diagnose`, one module of this package per runtime): each runtime value is tied
to the module that produced it (by the weight it reads, or the module scope its converter recorded) and handed back
as records in the artifact's order. An op whose input agrees but output does not is the culprit; one whose input
already disagrees (while the previous record's output agreed) points at the modules run in between.
The first module whose relative error (||a - b|| / ||b||) exceeds the precision's tolerance is named.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobileclip_deploy.errors import UserError

# Relative error a healthy artifact stays under at every module, by the bits its scheme computes or stores at.
TOLERANCES = {32: 1e-3, 16: 3e-2, 8: 0.1}
LOW_BIT_TOLERANCE = 0.3


# What a runtime's fused conv/linear ops apply after the product (ONNX Runtime's `activation` attribute), by
# lower-case name.
ACTIVATIONS = {"relu": lambda v: np.maximum(v, 0), "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "tanh": np.tanh}


Record = tuple[str, str, np.ndarray, np.ndarray | None]  # module, op, output, data input (artifact's order)


def tolerance(bits: int) -> float:
    return TOLERANCES.get(bits, LOW_BIT_TOLERANCE)


@dataclass
class Trace:
    """PyTorch modules in the order they finished, with their first input and their output; `alternatives` are other
    forms of a module's output that a converter may materialize instead (a LayerNorm before its affine, which
    litert-torch folds into the next linear layer)."""

    order: list[str] = field(default_factory=list)
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    leaves: set[str] = field(default_factory=set)
    alternatives: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def expected(self, module: str) -> list[np.ndarray]:
        return [self.outputs[module], *self.alternatives.get(module, [])]


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
    for name, sub in module.named_modules():
        if isinstance(sub, nn.LayerNorm) and sub.elementwise_affine and name in trace.inputs:
            trace.alternatives[name] = [_without_affine(sub, trace.inputs[name])]
    return trace


def _without_affine(norm: nn.LayerNorm, x: np.ndarray) -> np.ndarray:
    """`norm`'s output on `x` with weight 1 and bias 0, by its own forward (LayerNorm2d permutes around it)."""
    plain = copy.deepcopy(norm)
    with torch.no_grad():
        plain.weight.fill_(1)
        if plain.bias is not None:
            plain.bias.zero_()
        return plain(torch.from_numpy(x)).float().numpy()


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


def first_divergence(trace: Trace, records: list[Record], tol: float, fused: dict[str, Any] | None = None,
                     input_of: dict[str, str] | None = None) -> dict[str, Any]:
    """The first record (module, op, output, data input; in the artifact's order) whose output departs from its
    module's. A runtime may fuse the activation that follows a module into its op (`fused`: op -> that activation
    as a numpy function): such an op is compared with the activation of its module's output, and a divergence
    inside it names the module and the activation module PyTorch ran next. A converter may instead name a fused op
    after the activation, its last module (`input_of`: op -> the module whose input its data input is, the fused
    chain's first): a divergence inside it names both."""
    fused, input_of = fused or {}, input_of or {}
    previous = None
    compared = 0
    for owner, op, value, data in records:
        errors = [relative_error(value, fused[op](e) if op in fused else e) for e in trace.expected(owner)]
        errors = [e for e in errors if e is not None]
        if not errors:
            continue
        out_err = min(errors)
        compared += 1
        if out_err > tol:
            first = input_of.get(op, owner)
            in_err = None if data is None or first not in trace.inputs else relative_error(data, trace.inputs[first])
            if in_err is not None and in_err <= tol:
                names = list(dict.fromkeys([first, owner]))
                if op in fused:
                    names += _between(trace, owner, None)[:1]
                return _divergence(", ".join(names), out_err, "inside", op, tol)
            between = _between(trace, previous, owner)
            return _divergence(", ".join(between) if between else owner, out_err,
                               f"between {previous or 'the input'} and {owner}", op, tol)
        previous = owner
    return {"module": None, "compared": compared, "tolerance": tol}


def diagnose(backend: Any, path: Path, module: nn.Module, x: np.ndarray, scheme: Any) -> dict[str, Any]:
    """Compare the artifact at `path`, written by `backend` (exporters.backends.Backend) at `scheme`
    (exporters.schemes.Scheme), with `module` (the affine-folded tower it was exported from) on one input."""
    if not backend.diagnoses:
        from mobileclip_deploy.exporters.backends import all_backends

        able = [b.name for b in all_backends().values() if b.diagnoses]
        raise UserError(f"{Path(path).name}: diagnose compares {', '.join(able)} artifacts; {backend.name} "
                        "artifacts cannot be looked into op by op yet")
    if Path(path).suffix != backend.suffix:  # a file derived from the artifact (an ONNX model's .ort twin)
        raise UserError(f"{Path(path).name}: diagnose compares the {backend.suffix} artifact {backend.name} writes, "
                        f"not files derived from it; diagnose the {backend.suffix} file it was made from")
    return {"backend": backend.name, **backend.diagnose(Path(path), module, x, tolerance(scheme.bits), scheme)}

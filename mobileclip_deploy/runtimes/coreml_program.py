"""A saved Core ML program (`.mlpackage`) executed on Linux, op by op, as its MIL program says.

No Core ML runtime exists for Linux, but coremltools loads a package back into its MIL program, and most MIL op
classes compute their result with numpy (`value_inference`, meant for constant folding); the `constexpr_*`
decompression ops decode their weights (`materialized_val_inference`). This module walks the main function in
program order with real inputs: each op runs its own coremltools implementation, except the ones that have none
(`conv`, `gather_nd`, `batch_norm`), are too slow (`gelu`: `np.vectorize(math.erf)`), crash on numpy 2.4
(`reduce_*` with `keepdims=np.bool_`) or carry the accumulation models (`linear`, `matmul`): those have small torch
kernels here. Compressed weights are decoded once per loaded program.

fp16 programs are run under two arithmetic models that bracket a device: `fp16-storage` (every fp16 result
rounded to fp16, arithmetic inside an op in fp32: the lenient one, which parity judges) and `fp16-native` (inputs
and elementwise arithmetic in fp16, dot products accumulated in fp16 every `CHUNK` products, results below fp16's
smallest normal flushed to zero). Both record, per op, overflow (|x| > 65504, inf, NaN) and underflow (nonzero
results below the smallest normal). What this proves and what it does not: README "Core ML on Linux".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mobileclip_deploy.runtimes import Runner, Runtime, register, require

FP16_MAX = 65504.0
FP16_TINY = 2.0**-14  # fp16's smallest normal
CHUNK = 32  # products per fp16 partial sum in the native model
LENIENT, NATIVE, FP32 = "fp16-storage", "fp16-native", "fp32"
# The native-fp16 model is reported, never judged: it runs on the first inputs of a check only (it doubled the cost
# of every fp16 check: S0 fp16 image 134.7 s for 16 inputs on a loaded 2-core host, benchmarks/coreml_program_cost.py)
NATIVE_INPUTS = 2


class _Bound:
    """What a MIL `Var` holds as its symbolic value (`.val`): lets an op's own `value_inference` read real data."""

    __slots__ = ("val",)

    def __init__(self, val: Any) -> None:
        self.val = val


@dataclass
class OpStats:
    """Overflow / underflow of one op over every call so far."""

    index: int
    name: str
    op_type: str
    overflow: int = 0
    underflow: int = 0
    max_abs: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.name, "type": self.op_type, "overflow": self.overflow,
                "underflow": self.underflow, "max_abs": float(self.max_abs)}


@dataclass
class Report:
    """Per-op fp16 range problems of one arithmetic model, accumulated over calls."""

    model: str
    ops: dict[str, OpStats] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)  # every fp16 op's largest finite |x|

    def record(self, index: int, op, value: np.ndarray) -> None:
        finite = np.isfinite(value)
        magnitude = np.abs(np.where(finite, value, 0)).astype(np.float32)
        self.peaks[op.name] = max(self.peaks.get(op.name, 0.0), float(magnitude.max(initial=0.0)))
        over = int((~finite).sum() + (magnitude > FP16_MAX).sum())
        under = int(((magnitude > 0) & (magnitude < FP16_TINY)).sum())
        if over or under:
            stats = self.ops.setdefault(op.name, OpStats(index, op.name, op.op_type))
            stats.overflow += over
            stats.underflow += under
            stats.max_abs = max(stats.max_abs, float(magnitude.max(initial=0.0)) if finite.all() else float("inf"))

    @property
    def first_overflow(self) -> OpStats | None:
        return min((s for s in self.ops.values() if s.overflow), key=lambda s: s.index, default=None)

    def to_dict(self) -> dict[str, Any]:
        over = sorted((s for s in self.ops.values() if s.overflow), key=lambda s: s.index)
        under = sorted((s for s in self.ops.values() if s.underflow), key=lambda s: s.index)
        first = self.first_overflow
        return {"model": self.model, "first_overflow": first.to_dict() if first else None,
                "overflow_ops": [s.to_dict() for s in over], "underflow_ops": len(under),
                "underflow_values": sum(s.underflow for s in under),
                "most_underflow": [s.to_dict() for s in sorted(under, key=lambda s: -s.underflow)[:5]]}


def _dtype(var) -> np.dtype | None:
    from coremltools.converters.mil.mil import types

    dtype = var.dtype
    return np.dtype(types.nptype_from_builtin(dtype)) if types.is_scalar(dtype) or types.is_tensor(
        var.sym_type) else None


def _torch(x: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _fp16_sum(partials) -> np.ndarray:
    """Sequential fp16 accumulation of partial sums (each rounded to fp16 before it is added)."""
    total = None
    for part in partials:
        part = np.asarray(part, dtype=np.float32).astype(np.float16)
        total = part if total is None else (total.astype(np.float32) + part.astype(np.float32)).astype(np.float16)
    return total


def _chunks(size: int) -> list[slice]:
    return [slice(i, min(i + CHUNK, size)) for i in range(0, size, CHUNK)]


# ---- own kernels: (op, inputs by name, native) -> output -------------------------------------------------------


def _conv(op, a: dict[str, Any], native: bool) -> np.ndarray:
    import torch.nn.functional as F

    x, w = a["x"], a["weight"]
    spatial = x.ndim - 2
    strides = [int(s) for s in a.get("strides", [1] * spatial)]
    dilations = [int(d) for d in a.get("dilations", [1] * spatial)]
    groups = int(a.get("groups", 1))
    pad_type = str(a.get("pad_type", "valid"))
    pads: list[int] = []
    for i in range(spatial):
        size, kernel = x.shape[2 + i], (w.shape[2 + i] - 1) * dilations[i] + 1
        if pad_type == "custom":
            before, after = int(a["pad"][2 * i]), int(a["pad"][2 * i + 1])
        elif pad_type in ("same", "same_lower"):
            total = max((-(-size // strides[i]) - 1) * strides[i] + kernel - size, 0)
            before = total // 2 if pad_type == "same" else total - total // 2
            after = total - before
        else:
            before = after = 0
        pads[:0] = [before, after]  # F.pad lists the last dimension first
    conv = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    xt = F.pad(_torch(x), pads)
    per_group = w.shape[1]

    def partial(sl: slice) -> np.ndarray:
        channels = np.concatenate([np.arange(g * per_group, (g + 1) * per_group)[sl] for g in range(groups)])
        return conv(xt[:, channels], _torch(w[:, sl]), None, strides, 0, dilations, groups).numpy()

    bias = a.get("bias")
    if not native:
        return conv(xt, _torch(w), None if bias is None else _torch(bias), strides, 0, dilations, groups).numpy()
    out = _fp16_sum(partial(sl) for sl in _chunks(per_group))
    return out if bias is None else _fp16_sum([out, np.reshape(bias, (1, -1) + (1,) * spatial)])


def _matmul_chunked(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x @ y with the contraction accumulated in fp16 every CHUNK products."""
    return _fp16_sum(_torch(x[..., sl]).matmul(_torch(y[..., sl, :])).numpy() for sl in _chunks(x.shape[-1]))


def _linear(op, a: dict[str, Any], native: bool) -> np.ndarray:
    x, w, bias = a["x"], a["weight"], a.get("bias")
    if native:
        out = _matmul_chunked(x, np.swapaxes(w, -1, -2))
        return out if bias is None else _fp16_sum([out, np.broadcast_to(bias, out.shape)])
    out = _torch(x).matmul(_torch(w).T).numpy()
    return out if bias is None else out + np.asarray(bias, dtype=np.float32)


def _matmul(op, a: dict[str, Any], native: bool) -> np.ndarray:
    x, y = a["x"], a["y"]
    x = np.swapaxes(x, -1, -2) if bool(a.get("transpose_x", False)) and x.ndim > 1 else x
    y = np.swapaxes(y, -1, -2) if bool(a.get("transpose_y", False)) and y.ndim > 1 else y
    if native and x.ndim > 1 and y.ndim > 1:
        return _matmul_chunked(x, y)
    return _torch(x).matmul(_torch(y)).numpy()


def _batch_norm(op, a: dict[str, Any], native: bool) -> np.ndarray:
    x = np.asarray(a["x"], dtype=np.float32)
    shape = (1, -1) + (1,) * (x.ndim - 2)

    def channel(name: str, default: float) -> np.ndarray:
        value = a.get(name)
        return np.full(x.shape[1], default, np.float32) if value is None else np.asarray(value, np.float32)

    scale = channel("gamma", 1.0) / np.sqrt(channel("variance", 1.0) + float(a.get("epsilon", 1e-5)))
    return (x - channel("mean", 0.0).reshape(shape)) * scale.reshape(shape) + channel("beta", 0.0).reshape(shape)


def _gelu(op, a: dict[str, Any], native: bool) -> np.ndarray:
    import torch

    x = _torch(a["x"])
    mode = str(a.get("mode", "EXACT"))
    if mode == "SIGMOID_APPROXIMATION":
        return (x * torch.sigmoid(1.702 * x)).numpy()
    return torch.nn.functional.gelu(x, approximate="tanh" if mode == "TANH_APPROXIMATION" else "none").numpy()


def _gather_nd(op, a: dict[str, Any], native: bool) -> np.ndarray:
    x, indices = np.asarray(a["x"]), np.asarray(a["indices"]).astype(np.int64)
    batch = int(a.get("batch_dims", 0))
    if batch:
        lead = x.shape[:batch]
        flat_x = x.reshape((-1,) + x.shape[batch:])
        flat_i = indices.reshape((-1,) + indices.shape[batch:])
        out = np.stack([xi[tuple(np.moveaxis(ii, -1, 0))] for xi, ii in zip(flat_x, flat_i)])
        return out.reshape(lead + out.shape[1:])
    return x[tuple(np.moveaxis(indices, -1, 0))]


def _reduce(op, a: dict[str, Any], native: bool) -> np.ndarray:
    """coremltools' own reduction operator, with a plain bool for keepdims (numpy 2.4 rejects np.bool_)."""
    axes = a.get("axes")
    axes = None if axes is None else tuple(int(i) for i in np.atleast_1d(axes))
    return op.get_operator()(a["x"], axis=axes, keepdims=bool(a.get("keep_dims", False)))


KERNELS: dict[str, Callable[[Any, dict[str, Any], bool], np.ndarray]] = {
    "conv": _conv, "linear": _linear, "matmul": _matmul, "batch_norm": _batch_norm, "gelu": _gelu,
    "gather_nd": _gather_nd,
}
_REDUCTIONS = ("reduce_mean", "reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_l2_norm",
               "reduce_l1_norm", "reduce_sum_square", "reduce_log_sum", "reduce_log_sum_exp")
KERNELS.update({name: _reduce for name in _REDUCTIONS})


class Program:
    """A loaded MIL program, its constants and decompressed weights decoded once, runnable on real inputs."""

    def __init__(self, prog, source: str = "") -> None:
        self.prog, self.source = prog, source
        self.function = prog.functions["main"]
        self.ops = list(self.function.operations)
        self.input_names = list(self.function.inputs)
        self.output_names = [v.name for v in self.function.outputs]
        self.fp16 = any(_dtype(v) == np.float16 for op in self.ops for v in op.outputs)
        self.constants: dict[str, Any] = {}
        for op in self.ops:  # const and constexpr_* (which may read other constexprs): decoded once, here
            if op.op_type == "const":
                self.constants[op.outputs[0].name] = op.outputs[0].val
            elif op.op_type.startswith("constexpr_"):
                values = self._bound(op, self.constants, op.materialized_val_inference)
                for var, value in zip(op.outputs, values if isinstance(values, tuple) else (values,)):
                    self.constants[var.name] = value
        self.reports: dict[str, Report] = {}

    @classmethod
    def load(cls, path: Path) -> "Program":
        ct = require("coremltools", "export", "The Core ML program executor")
        from coremltools.converters.mil.frontend.milproto.load import load as load_milproto

        ml = ct.models.MLModel(str(path), skip_model_load=True)
        spec = ml.get_spec()
        return cls(load_milproto(spec, spec.specificationVersion, file_weights_dir=ml.weights_dir), str(path))

    @property
    def models(self) -> tuple[str, ...]:
        return (LENIENT, NATIVE) if self.fp16 else (FP32,)

    @staticmethod
    def _bound(op, env: dict[str, Any], call: Callable[[], Any]) -> Any:
        """`call()` (the op's own implementation) with its input vars holding the values in `env`."""
        saved = []
        for var in op.get_flattened_inputs():
            if var.name in env:
                saved.append((var, var._sym_val))
                var._sym_val = _Bound(env[var.name])
        try:
            return call()
        finally:
            for var, old in saved:
                var._sym_val = old

    def run(self, feeds: dict[str, np.ndarray], model: str | None = None,
            observe: Callable[[int, Any, dict[str, Any]], None] | None = None) -> dict[str, np.ndarray]:
        """Outputs of the main function on `feeds` under arithmetic `model` (default: the judged one).

        `observe(index, op, values)` is called after each op with every value so far, by var name (diagnose reads
        an op's inputs and outputs there).
        """
        model = model or self.models[0]
        native = model == NATIVE
        report = self.reports.setdefault(model, Report(model)) if model != FP32 else None
        env: dict[str, Any] = dict(self.constants)
        for name in self.input_names:
            env[name] = np.asarray(feeds[name], dtype=_dtype(self.function.inputs[name]))
        for index, op in enumerate(self.ops):
            if op.outputs[0].name in env:
                continue
            values = self._execute(op, env, native)
            for var, value in zip(op.outputs, values if isinstance(values, tuple) else (values,)):
                value = np.asarray(value)
                target = _dtype(var)
                if target == np.float16 and report is not None:
                    report.record(index, op, value)
                if target is not None and value.dtype != target:
                    value = value.astype(target)
                if native and target == np.float16:
                    value = np.where(np.abs(value) < FP16_TINY, np.float16(0), value)
                env[var.name] = value
            if observe is not None:
                observe(index, op, env)
        return {name: env[name] for name in self.output_names}

    def _execute(self, op, env: dict[str, Any], native: bool) -> Any:
        args = {}
        for key, var in op.inputs.items():
            if isinstance(var, (list, tuple)):
                args[key] = [env[v.name] for v in var]
            else:
                args[key] = env[var.name]
        widened = {k: _widen(v, native) for k, v in args.items()}
        kernel = KERNELS.get(op.op_type)
        if kernel is not None:
            return kernel(op, widened, native)
        return self._bound(op, {v.name: _widen(env[v.name], native) for v in op.get_flattened_inputs()},
                           op.value_inference)


def _widen(value: Any, native: bool) -> Any:
    """fp16 data computed in fp32 (the storage model) or kept fp16 (the native one)."""
    if isinstance(value, list):
        return [_widen(v, native) for v in value]
    if isinstance(value, np.ndarray) and value.dtype == np.float16 and not native:
        return value.astype(np.float32)
    return value


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return -1.0
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def program_runner(program: Program) -> Runner:
    """A Runner for `program`: the judged model's outputs; for fp16, both models' reports and their gap in `info`."""
    import coremltools

    (name,), output = program.input_names, program.output_names[0]
    var = program.function.inputs[name]
    info: dict[str, Any] = {"runtime": "coreml-program", "version": coremltools.__version__,
                            "executor": "MIL ops in program order (coremltools implementations + own kernels)",
                            "precision": "fp16" if program.fp16 else "fp32", "judged_model": program.models[0]}

    def run(x: np.ndarray) -> np.ndarray:
        out = program.run({name: x})[output]
        if program.fp16:
            if info.get("native_inputs", 0) < NATIVE_INPUTS:
                native = program.run({name: x}, NATIVE)[output]
                info["native_inputs"] = info.get("native_inputs", 0) + len(x)
                info["native_min_cosine"] = min(info.get("native_min_cosine", 1.0), _cosine(out, native))
            info["fp16"] = {m: program.reports[m].to_dict() for m in program.models}
        return out

    shape = [int(d) for d in var.shape]
    return Runner(run, shape, _dtype(var), info)


def load(path: Path, threads: int = 1) -> Runner:
    return program_runner(Program.load(path))


register(Runtime("coreml-program", (".mlpackage",), load, extra="export"))

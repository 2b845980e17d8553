"""ONNX export (torch.onnx dynamo path, one file, opset 20) and ONNX Runtime quantization and checks.

Choices measured on this stack (reference/export-stack.md): opset 20 writes GELU as the native `Gelu` op
(at 18 it is Erf/Mul/Div, which ORT does not fuse: S0 image 59 -> 52 ms at 1 thread) and, below 23, keeps
attention as MatMul+Softmax, which ORT quantizes without the broken QAttention path; int8 uses
`reduce_range=True` and quantizes only Conv/MatMul/Gemm, because the AVX2 U8S8 kernels saturate otherwise
and quantized masks/softmax hurt text. Dynamic int8 (8da8w) leaves convs float, as ExecuTorch's does: ORT's
ConvInteger has no fast kernel and made S0's image tower 5.4x slower than fp32 (348 vs 64 ms). The layers in
`sensitive.float_modules` stay float, found through the module path the exporter records on every node.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobileclip_deploy.exporters.sensitive import float_modules, inside
from mobileclip_deploy.exporters.wrappers import INPUT_NAME, OUTPUT_NAME, Float16Compute
from mobileclip_deploy.runtimes.onnxruntime import session

OPSET = 20
QUANT_OP_TYPES = {"8da8w": ["MatMul", "Gemm"], "w8a8": ["Conv", "MatMul", "Gemm"]}


def _optimize(path: Path, output: Path, ort_format: bool = False, optimize: bool = True) -> None:
    """Save ONNX Runtime's optimized graph; EXTENDED, not ALL: ALL adds layout transforms tied to this CPU, which
    would not be portable."""
    session(path, optimized_output=output, ort_format=ort_format,
            level="ORT_ENABLE_EXTENDED" if optimize else "ORT_DISABLE_ALL")


def _torch_export(module: nn.Module, example: torch.Tensor, tower: str, path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=True, opset_version=OPSET, external_data=False,
                          input_names=[INPUT_NAME[tower]], output_names=[OUTPUT_NAME[tower]], verbose=False)


class _CalibrationReader:
    """Feeds calibration batches (one image per run, as the artifact has a fixed batch of 1)."""

    def __init__(self, name: str, data: np.ndarray) -> None:
        self._items = iter([{name: data[i : i + 1]} for i in range(len(data))])

    def get_next(self):
        return next(self._items, None)


def node_scopes(node) -> list[str]:
    """The module paths (outermost first) then the op name that the torch exporter recorded on `node`."""
    meta = {p.key: p.value for p in node.metadata_props}
    return [s for s in ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]")) if s]


def op_key(scopes: list[str]) -> str:
    """`module/op` for one op owned directly by its innermost module (`/op` at the tower's top level)."""
    return f"{scopes[-2] if len(scopes) >= 2 else ''}/{scopes[-1] if scopes else ''}"


def _nodes_in(model, modules: list[str]) -> list[str]:
    """Names of the ONNX nodes that the torch exporter traced inside any of `modules`.

    An entry `module/op` names one op owned directly by `module` (how `--quant auto` keeps the text projection
    float without its whole tower).
    """
    names = []
    for node in model.graph.node:
        scopes = node_scopes(node)
        if op_key(scopes) in modules or any(inside(scope, modules) for scope in scopes):
            names.append(node.name)
    return names


def export(module: nn.Module, example: torch.Tensor, tower: str, scheme: str, path: Path,
           calibration: np.ndarray | None, work_dir: Path, keep: list[str] | None = None) -> dict:
    """Write `path` (one .onnx file) for `scheme`; return extra manifest facts.

    `keep` (module paths) replaces the hand-written float layers: a `--quant auto` plan or a recipe's `keep_float`.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    raw = work_dir / "raw.onnx"
    _torch_export(Float16Compute(module) if scheme == "fp16" else module, example, tower, raw)
    onnx.checker.check_model(str(raw))
    facts: dict = {}
    if scheme in ("fp32", "fp16"):
        _optimize(raw, path)
    elif scheme in ("8da8w", "w8a8"):
        keep = float_modules(module) if keep is None else keep
        common = dict(op_types_to_quantize=QUANT_OP_TYPES[scheme], per_channel=True, reduce_range=True,
                      weight_type=QuantType.QInt8, nodes_to_exclude=_nodes_in(onnx.load(str(raw)), keep))
        facts["kept_in_float"] = keep
        if scheme == "8da8w":
            quantize_dynamic(str(raw), str(path), **common)
        else:
            assert calibration is not None, "w8a8 needs calibration data (checked when the request was planned)"
            quantize_static(str(raw), str(path), _CalibrationReader(INPUT_NAME[tower], calibration),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            calibrate_method=CalibrationMethod.MinMax, **common)
    else:
        raise ValueError(f"onnx exporter has no scheme {scheme!r}")
    model = onnx.load(str(path))
    return {"opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            "graph_optimization": "ORT_ENABLE_EXTENDED" if scheme in ("fp32", "fp16") else "none",
            "ops": sorted({n.op_type for n in model.graph.node}), **facts}


def write_ort(onnx_path: Path, ort_path: Path, scheme: str) -> None:
    """Convert to the ORT Mobile flatbuffer format (EXTENDED optimizations, so it runs on any CPU).

    fp16 is converted as is: optimizing on this CPU-only host folds the casts ORT inserts for its CPU kernels
    into fp32 weights, which doubled the file (S0 image 23 -> 46 MB) and undid fp16 for mobile EPs.
    """
    _optimize(onnx_path, ort_path, ort_format=True, optimize=scheme != "fp16")

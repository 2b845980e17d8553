"""LiteRT (formerly TensorFlow Lite) `.tflite` encoders for Android: litert-torch converts the folded tower to a
float32 flatbuffer with named I/O, our metadata goes into that file, and ai-edge-quantizer derives fp16 and int8
from it (seconds, where PT2E through litert-torch took minutes and its dynamic int8 text tower failed at run time).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobileclip_deploy.exporters.backends import Backend, Build, register
from mobileclip_deploy.exporters.schemes import FP32, Scheme
from mobileclip_deploy.exporters.wrappers import INPUT_NAME, OUTPUT_NAME
from mobileclip_deploy.exporters.xnnpack_depthwise import split_depthwise

METADATA_KEY = "mobileclip_deploy"
SIGNATURE = "serving_default"
# XNNPACK computes in fp16 (fp16 accumulation) on ARM cores with fp16 arithmetic when the model carries this entry;
# x86 and cores without it ignore it and compute in fp32 on the fp16 weights.
REDUCED_PRECISION = {"reduced_precision_support": "fp16accfp16"}
# Static int8 on the ops XNNPACK runs in int8; everything between stays float, so I/O is float like other backends.
# Depthwise convs stay float as in the other backends' w8a8 (exporters/sensitive.py): S0's image tower with int8
# depthwise convs fell to min cosine 0.959 and ran 2.7x slower than fp32; without them 0.9966 at 0.94x.
STATIC_OPS = ("FULLY_CONNECTED", "CONV_2D")
# Dynamic int8: XNNPACK has no dynamically quantized depthwise kernel (those ops fell back to the reference
# kernels), so depthwise convs keep float weights; the token table is stored in int8.
DYNAMIC_OPS = ("FULLY_CONNECTED", "CONV_2D", "EMBEDDING_LOOKUP")
FP16_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "EMBEDDING_LOOKUP")


class _Named(nn.Module):
    """The tower with keyword input and a named output, which litert-torch turns into the signature's names."""

    def __init__(self, tower: nn.Module, output: str) -> None:
        super().__init__()
        self.tower, self.output = tower, output

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        (x,) = inputs.values()
        return {self.output: self.tower(x)}


def convert(module: nn.Module, example: torch.Tensor, tower: str, path: Path, split: bool = True) -> None:
    """Write the float32 `.tflite` of `module` with the signature `serving_default(pixels|tokens) -> *_embedding`.

    `split=False` converts the module as it is (benchmarks/litert_latency.py measures what the rewrite buys)."""
    import litert_torch

    # The 7x7 and channel-multiplying depthwise convs of MCi towers fall off XNNPACK's fast depthwise kernels in
    # LiteRT as in ExecuTorch; the same rewrite made S0's image tower 1.75x faster here (0.57x the time).
    if split:
        module = split_depthwise(module)
    if tower == "text":
        example = example.to(torch.int32)
    with contextlib.redirect_stdout(sys.stderr):  # its progress lines are not results
        edge = litert_torch.signature(SIGNATURE, _Named(module.eval(), OUTPUT_NAME[tower]),
                                      sample_kwargs={INPUT_NAME[tower]: example}).convert()
        edge.export(str(path))


def write_metadata(path: Path, entries: dict[str, bytes]) -> None:
    """Add `entries` to the flatbuffer's `Model.metadata` (name -> buffer) in place.

    Only on the converter's float file: ai-edge-quantizer's outputs keep weights in offset buffers that re-packing
    corrupts, and it carries the float file's metadata into its outputs.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    model.metadata = [m for m in model.metadata or [] if _name(m.name) not in entries]
    for name, data in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(data, dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        model.metadata.append(entry)
    flatbuffer_utils.write_model(model, str(path))


def _name(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_metadata(path: Path) -> dict[str, bytes]:
    """Every `Model.metadata` entry of a `.tflite`, read with LiteRT's flatbuffer schema (what an app's
    `Interpreter`-side metadata readers see)."""
    from ai_edge_litert import schema_py_generated as schema

    data = Path(path).read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    out = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        buffer = model.Buffers(entry.Buffer())
        if buffer.Offset() > 1:  # stored after the flatbuffer (large models, quantizer outputs)
            out[_name(entry.Name())] = data[buffer.Offset(): buffer.Offset() + buffer.Size()]
        else:
            out[_name(entry.Name())] = buffer.DataAsNumpy().tobytes()
    return out


def _recipe(ops: tuple[str, ...], op_config: dict[str, Any], algorithm: str = "min_max_uniform_quantize") -> list:
    return [{"regex": ".*", "operation": op, "algorithm_key": algorithm, "op_config": op_config} for op in ops]


def quantize(float_path: Path, scheme: str, out: Path, calibration: np.ndarray | None, tower: str) -> None:
    """Derive `scheme` from the float `.tflite` with ai-edge-quantizer and write it to `out`."""
    from ai_edge_quantizer import calibrator, quantizer, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    weights8 = {"num_bits": 8, "symmetric": True, "granularity": "CHANNELWISE", "dtype": "INT"}
    if scheme == "fp16":
        recipe = _recipe(FP16_OPS, {"weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
                                    "compute_precision": "FLOAT", "explicit_dequantize": True}, "float_casting")
    elif scheme == "8da8w":
        recipe = _recipe(DYNAMIC_OPS, {"weight_tensor_config": weights8, "compute_precision": "INTEGER",
                                       "explicit_dequantize": False})
    elif scheme == "w8a8":
        recipe = _recipe(STATIC_OPS, {"activation_tensor_config": {"num_bits": 8, "symmetric": False,
                                                                   "granularity": "TENSORWISE", "dtype": "INT"},
                                      "weight_tensor_config": weights8, "compute_precision": "INTEGER",
                                      "explicit_dequantize": False})
    else:
        raise ValueError(f"unknown LiteRT scheme {scheme!r}")
    qt = quantizer.Quantizer(str(float_path), recipe)
    qsvs = None
    if qt.need_calibration:
        if calibration is None:
            raise ValueError(f"{scheme} needs calibration inputs")
        manager = recipe_manager.RecipeManager()
        manager.load_quantization_recipe(qt.get_quantization_recipe())
        # min/max over every photo: the default moving average let the first photo set the ranges
        calib = calibrator.Calibrator(str(float_path), num_threads=1, qsv_update_func=qsv_utils.min_max_update)
        dtype = np.int32 if tower == "text" else np.float32
        calib.calibrate({SIGNATURE: [{INPUT_NAME[tower]: np.asarray(row[None], dtype=dtype)}
                                     for row in calibration]}, manager)
        qsvs = calib.get_model_qsvs()
    with contextlib.redirect_stdout(sys.stderr):
        result = qt.quantize(qsvs, enable_progress_bar=False, enable_progress_report=False)
    Path(out).write_bytes(bytes(result.quantized_model))


def export(module: nn.Module, example: torch.Tensor, tower: str, scheme: str, path: Path, work_dir: Path,
           metadata: dict[str, Any], calibration: np.ndarray | None = None, step=lambda _: None) -> dict[str, Any]:
    """Convert, embed `metadata`, quantize; return the facts for the manifest."""
    float_path = path if scheme == "fp32" else Path(work_dir) / f"{Path(path).stem}.float.tflite"
    step("converting with litert-torch")
    convert(module, example, tower, float_path)
    entries = {METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()}
    if scheme == "fp16":
        entries.update({k: v.encode() for k, v in REDUCED_PRECISION.items()})
    write_metadata(float_path, entries)
    if scheme != "fp32":
        step(f"quantizing ({scheme}) with ai-edge-quantizer")
        quantize(float_path, scheme, path, calibration, tower)
        float_path.unlink()
    return {"converter": "litert-torch", "quantizer": None if scheme == "fp32" else "ai-edge-quantizer",
            "signature": SIGNATURE, "metadata_keys": sorted(entries), "split_depthwise": True,
            "quantized_ops": {"fp16": FP16_OPS, "8da8w": DYNAMIC_OPS, "w8a8": STATIC_OPS}.get(scheme, ())}


@register
class LiteRT(Backend):
    name = "litert"
    suffix = ".tflite"
    schemes = (
        FP32,
        Scheme("fp16", 16, help="float16 weights; XNNPACK computes in fp16 on ARM cores with fp16 arithmetic "
               "(reduced_precision_support metadata), in fp32 elsewhere"),
        Scheme("8da8w", 8, help="dynamic int8 activations, per-channel int8 weights of linears and convs "
               "(depthwise convs stay float), int8 token table"),
        Scheme("w8a8", 8, static=True, help="static int8 (min/max calibration) of linears and convs (depthwise convs "
               "stay float); float I/O"),
    )
    help = "LiteRT (TensorFlow Lite) .tflite for Android's LiteRT / XNNPACK runtime"
    runtime = "litert"
    runtime_target = "ai-edge-litert>=2.3"
    platform = "android"
    arm64_guest = "litert"
    extra = "litert"
    requires = ("litert_torch", "ai_edge_quantizer")
    tools = ("litert-torch", "ai-edge-litert", "ai-edge-quantizer")

    def export(self, build: Build) -> tuple[dict[str, Any], Any]:
        facts = export(build.module, build.example, build.tower, build.scheme.name, build.path, build.work_dir,
                       build.metadata, build.calibration, build.step)
        return facts, None

    def diagnose(self, path: Path, module: nn.Module, x: np.ndarray, tol: float) -> dict[str, Any]:
        from mobileclip_deploy.verify.diagnose import litert as diagnose_litert

        return diagnose_litert.compare(path, module, x, tol)

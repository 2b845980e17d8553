"""LiteRT (formerly TensorFlow Lite) `.tflite` encoders for Android: litert-torch converts the folded tower to a
float32 flatbuffer with named I/O, our metadata goes into that file, and ai-edge-quantizer derives fp16 and int8
from it (seconds, where PT2E through litert-torch took minutes and its dynamic int8 text tower failed at run time).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobileclip_deploy.exporters.backends import Backend, Build, register
from mobileclip_deploy.exporters.schemes import FP32, Scheme
from mobileclip_deploy.exporters.sensitive import inside
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


def _class_name(module: nn.Module) -> str:
    kind = type(module)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _owner(scope: str, tower: nn.Module) -> str:
    """The module path (in `tower`) of the op whose ai-edge-quantizer scope is `scope`, "" for the tower itself.

    litert-torch names an op's output tensor after torch.export's module stack, `Class_attr` per module called
    (`.../mci.RepMixerBlock_0/mci.ConvMlp_mlp/torch.nn.modules.conv.Conv2d_fc1;2`), under the `_Named` wrapper and
    the tower; containers only indexed (ModuleList) leave no entry, so each entry is the nearest matching module below
    the previous one. Names that do not follow the pattern (the signature's output) belong to the tower."""
    segments = scope.partition(";")[0].split("/")[2:]  # [0]: the _Named wrapper, [1]: the tower
    path, current = "", tower
    for segment in segments:
        found = sorted(((name.count("."), name, child) for name, child in current.named_modules() if name
                        and segment == f"{_class_name(child)}_{name.rpartition('.')[2]}"), key=lambda f: f[:2])
        if not found:
            break
        _, name, current = found[0]
        path = f"{path}.{name}" if path else name
    return path


def static_ops(path: Path, tower: nn.Module) -> list[tuple[str, str, str]]:
    """(scope, owning module path, op key) of each op that w8a8 quantizes in the float `.tflite` at `path`.

    The scope (ai-edge-quantizer's name for an op: its output tensor names) is what recipes select by regex; the op
    key `module/OP_n` (the n-th op of that type owned by `module` itself) names one op where its module is an
    ancestor of others (the tower's output projection)."""
    from ai_edge_litert.tools import flatbuffer_utils
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfl

    model = flatbuffer_utils.read_model(str(path))
    split = split_depthwise(tower)  # the form `convert` writes (module paths kept)
    graph, ops, seen = model.subgraphs[0], [], {}
    for op in graph.operators:
        name = tfl.TFL_OP_CODE_TO_NAME.get(model.operatorCodes[op.opcodeIndex].builtinCode)
        if name is None or name.value not in STATIC_OPS:
            continue
        scope = tfl.get_op_scope(op, graph.tensors)
        owner = _owner(scope, split)
        n = seen[owner, name.value] = seen.get((owner, name.value), -1) + 1
        ops.append((scope, owner, f"{owner}/{name.value}_{n}"))
    return ops


def ops_in(ops: list[tuple[str, str, str]], keep: Sequence[str]) -> list[str]:
    """Scopes of the ops (from `static_ops`) inside the module paths or op keys in `keep`."""
    return [scope for scope, owner, key in ops if key in keep or inside(owner, list(keep))]


def _recipe(ops: tuple[str, ...], op_config: dict[str, Any], algorithm: str = "min_max_uniform_quantize",
            regex: str = ".*") -> list:
    return [{"regex": regex, "operation": op, "algorithm_key": algorithm, "op_config": op_config} for op in ops]


def recipe_for(scheme: str, exclude: Sequence[str] = ()) -> list:
    """ai-edge-quantizer's recipe for `scheme`; the ops whose scopes are in `exclude` stay float (a recipe's last
    matching entry wins)."""
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
    if exclude:
        pattern = "^(?:" + "|".join(re.escape(scope) for scope in exclude) + ")$"
        recipe += _recipe(STATIC_OPS, {}, "no_quantize", pattern)
    return recipe


def calibrate(float_path: Path, recipe: list, calibration: np.ndarray, tower: str) -> dict:
    """ai-edge-quantizer's calibration results (activation ranges) of `recipe` on the float `.tflite`, min/max over
    every input: the default moving average let the first photo set the ranges."""
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
    calib = calibrator.Calibrator(str(float_path), num_threads=1, qsv_update_func=qsv_utils.min_max_update)
    dtype = np.int32 if tower == "text" else np.float32
    calib.calibrate({SIGNATURE: [{INPUT_NAME[tower]: np.asarray(row[None], dtype=dtype)} for row in calibration]},
                    manager)
    return calib.get_model_qsvs()


def quantize(float_path: Path, scheme: str, out: Path, calibration: np.ndarray | None, tower: str,
             exclude: Sequence[str] = (), qsvs: dict | None = None) -> None:
    """Derive `scheme` from the float `.tflite` with ai-edge-quantizer and write it to `out` (`exclude`: as in
    `recipe_for`). `qsvs`: calibration results to reuse instead of calibrating (the float model's min/max ranges
    do not depend on what stays float)."""
    from ai_edge_quantizer import quantizer

    recipe = recipe_for(scheme, exclude)
    qt = quantizer.Quantizer(str(float_path), recipe)
    if qt.need_calibration and qsvs is None:
        if calibration is None:
            raise ValueError(f"{scheme} needs calibration inputs")
        qsvs = calibrate(float_path, qt.get_quantization_recipe(), calibration, tower)
    with contextlib.redirect_stdout(sys.stderr):
        result = qt.quantize(qsvs, enable_progress_bar=False, enable_progress_report=False)
    Path(out).write_bytes(bytes(result.quantized_model))


def export(module: nn.Module, example: torch.Tensor, tower: str, scheme: str, path: Path, work_dir: Path,
           metadata: dict[str, Any], calibration: np.ndarray | None = None, step=lambda _: None,
           keep: Sequence[str] | None = None, converted: Path | None = None) -> dict[str, Any]:
    """Convert (or start from `converted`, this module's float `.tflite` without metadata, which an `auto` search
    has just written), embed `metadata`, quantize (w8a8: the ops inside `keep`, module paths or op keys, stay
    float); return the facts for the manifest."""
    float_path = path if scheme == "fp32" else Path(work_dir) / f"{Path(path).stem}.float.tflite"
    if converted is not None:
        shutil.copyfile(converted, float_path)
    else:
        step("converting with litert-torch")
        convert(module, example, tower, float_path)
    entries = {METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()}
    if scheme == "fp16":
        entries.update({k: v.encode() for k, v in REDUCED_PRECISION.items()})
    write_metadata(float_path, entries)
    if scheme != "fp32":
        step(f"quantizing ({scheme}) with ai-edge-quantizer")
        exclude = ops_in(static_ops(float_path, module), keep) if keep else ()
        quantize(float_path, scheme, path, calibration, tower, exclude)
        float_path.unlink()
    facts = {"converter": "litert-torch", "quantizer": None if scheme == "fp32" else "ai-edge-quantizer",
             "signature": SIGNATURE, "metadata_keys": sorted(entries), "split_depthwise": True,
             "quantized_ops": {"fp16": FP16_OPS, "8da8w": DYNAMIC_OPS, "w8a8": STATIC_OPS}.get(scheme, ())}
    if keep is not None:
        facts["kept_in_float"] = list(keep)
    return facts


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
        Scheme("auto", 8, static=True, help="static int8 as w8a8, float layers chosen by measured sensitivity and "
               "latency on LiteRT to meet --min-cos/--min-agreement (writes a recipe reproducing the plan)",
               rebuilds_as="w8a8"),
    )
    help = "LiteRT (TensorFlow Lite) .tflite for Android's LiteRT / XNNPACK runtime"
    runtime = "litert"
    runtime_target = "ai-edge-litert>=2.3"
    platform = "android"
    arm64_guest = "litert"
    extra = "litert"
    requires = ("litert_torch", "ai_edge_quantizer")
    tools = ("litert-torch", "ai-edge-litert", "ai-edge-quantizer")
    keep_key = "keep_float"
    auto_titles = {"w8a8": "LiteRT static int8"}

    def export(self, build: Build) -> tuple[dict[str, Any], Any]:
        plan, keep, converted = None, build.keep, build.work_dir / f"{build.path.stem}.searched.tflite"
        if build.scheme.rebuilds_as:
            from mobileclip_deploy.exporters.autoquant_litert import search_litert

            inputs, anchors, targets = build.context.search_inputs(build.tower)
            plan = search_litert(build.module, build.example, build.tower, build.calibration, inputs, anchors,
                                 targets, build.step,  # a search that runs has converted the tower: kept, not redone
                                 searched=lambda search, _: shutil.copyfile(search.raw, converted))
            build.step("exporting the chosen plan")
            keep = plan.keep
        # The file says what it is built as (w8a8), so an `auto` artifact and its recipe's rebuild are one file.
        scheme = build.scheme.rebuilds_as or build.scheme.name
        facts = export(build.module, build.example, build.tower, scheme, build.path, build.work_dir,
                       {**build.metadata, "scheme": scheme}, build.calibration, build.step, keep,
                       converted if converted.is_file() else None)
        return ({**facts, "auto_plan": plan.to_dict()} if plan else facts), plan

    def diagnose(self, path: Path, module: nn.Module, x: np.ndarray, tol: float, scheme: Scheme) -> dict[str, Any]:
        from mobileclip_deploy.verify.diagnose import litert as diagnose_litert

        return diagnose_litert.compare(path, module, x, tol)

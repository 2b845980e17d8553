"""Core ML export (mlprogram via torch.export; the jit.trace path breaks with numpy 2.4) and Linux-side checks.

Compression touches only `linear` and `conv` weights: by default coremltools compresses every constant over
2048 elements, which ruins token embeddings and positional tables (reference/export-stack.md §0.10).
Core ML cannot run on Linux, so the check is structural plus a weight proxy: the compressed weights are
decompressed and loaded back into the PyTorch tower, whose outputs are compared with the fp32 tower.
"""

from __future__ import annotations

import copy
import json
import platform
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobileclip_deploy.exporters.wrappers import INPUT_NAME, OUTPUT_NAME

_COMPRESSED_OPS = ("constexpr_lut_to_dense", "constexpr_blockwise_shift_scale", "constexpr_affine_dequantize",
                   "constexpr_sparse_to_dense")
_NAME_SUFFIXES = ("_palettized", "_quantized", "_to_fp16")


def target_at_least(target: str, minimum: str | None) -> bool:
    return minimum is None or int(target.removeprefix("iOS")) >= int(minimum.removeprefix("iOS"))


def _compress(ml, scheme: str, target: str):
    from coremltools.optimize.coreml import (
        OpLinearQuantizerConfig,
        OpPalettizerConfig,
        OptimizationConfig,
        linear_quantize_weights,
        palettize_weights,
    )

    if scheme == "w8":
        config = OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        return linear_quantize_weights(ml, OptimizationConfig(op_type_configs={"linear": config, "conv": config}))
    nbits = int(scheme.removeprefix("pal"))
    grouped = target_at_least(target, "iOS18")  # per_grouped_channel is an iOS18 feature
    config = (OpPalettizerConfig(mode="kmeans", nbits=nbits, granularity="per_grouped_channel", group_size=16)
              if grouped else OpPalettizerConfig(mode="kmeans", nbits=nbits))
    return palettize_weights(ml, OptimizationConfig(op_type_configs={"linear": config, "conv": config}))


def export(module: nn.Module, example: torch.Tensor, tower: str, scheme: str, path: Path, target: str,
           image_input: bool, metadata: dict[str, str]) -> dict:
    """Write the .mlpackage for `scheme` at deployment `target`; return manifest facts."""
    import coremltools as ct

    with torch.no_grad():
        program = torch.export.export(module, (example,)).run_decompositions({})
    if tower == "image" and image_input:
        # The tower expects [0, 1]; a camera frame is 0..255, so only a 1/255 scale is needed.
        inputs = [ct.ImageType(name=INPUT_NAME[tower], shape=tuple(example.shape), scale=1 / 255.0,
                               color_layout=ct.colorlayout.RGB)]
    else:
        dtype = np.float32 if tower == "image" else np.int32
        inputs = [ct.TensorType(name=INPUT_NAME[tower], shape=tuple(example.shape), dtype=dtype)]
    ml = ct.convert(program, inputs=inputs, outputs=[ct.TensorType(name=OUTPUT_NAME[tower], dtype=np.float32)],
                    convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, target),
                    compute_precision=ct.precision.FLOAT32 if scheme == "fp32" else ct.precision.FLOAT16,
                    skip_model_load=True)
    if scheme not in ("fp32", "fp16"):
        ml = _compress(ml, scheme, target)
    ml.short_description = metadata.pop("description")
    ml.license = metadata.pop("license")
    ml.author = metadata.pop("author")
    ml.version = metadata.pop("version")
    ml.input_description[INPUT_NAME[tower]] = (
        "RGB camera frame (0..255), resized and center-cropped" if tower == "image" and image_input else
        "RGB pixels in [0, 1], NCHW, resized and center-cropped; normalization happens inside" if tower == "image"
        else "CLIP BPE token ids (int32), start/end-of-text tokens included, zero padded")
    ml.output_description[OUTPUT_NAME[tower]] = "unnormalized embedding (L2-normalize before cosine similarity)"
    ml.user_defined_metadata.update(metadata)
    ml.save(str(path))
    return {"deployment_target": target, "input_kind": "image" if tower == "image" and image_input else "tensor"}


def inspect_structure(path: Path, tower: str) -> dict:
    """What can be checked without a Mac: spec version, named I/O and dtypes, op inventory, compressed weights."""
    import coremltools as ct

    ml = ct.models.MLModel(str(path), skip_model_load=True)
    spec = ml.get_spec()
    ops: Counter[str] = Counter()
    for block in spec.mlProgram.functions["main"].block_specializations.values():
        ops.update(op.type for op in block.operations)

    def describe(feature) -> dict:
        kind = feature.type.WhichOneof("Type")
        if kind == "imageType":
            return {"name": feature.name, "kind": "image",
                    "shape": [1, 3, feature.type.imageType.height, feature.type.imageType.width]}
        array = feature.type.multiArrayType
        dtype = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType).lower()
        return {"name": feature.name, "kind": "tensor", "shape": list(array.shape), "dtype": dtype}

    inputs = [describe(f) for f in spec.description.input]
    outputs = [describe(f) for f in spec.description.output]
    problems = []
    if [i["name"] for i in inputs] != [INPUT_NAME[tower]]:
        problems.append(f"inputs are {[i['name'] for i in inputs]}, expected [{INPUT_NAME[tower]!r}]")
    if [o["name"] for o in outputs] != [OUTPUT_NAME[tower]] or outputs[0].get("dtype") != "float32":
        problems.append(f"outputs are {outputs}, expected float32 {OUTPUT_NAME[tower]!r}")
    if tower == "text" and inputs and inputs[0].get("dtype") != "int32":
        problems.append(f"tokens are {inputs[0].get('dtype')}, expected int32")
    return {"specification_version": spec.specificationVersion, "inputs": inputs, "outputs": outputs,
            "op_counts": dict(sorted(ops.items())),
            "compressed_weight_ops": {k: ops[k] for k in _COMPRESSED_OPS if ops[k]}, "problems": problems}


def _mil_name(torch_name: str, prefix: str) -> str:
    return prefix + torch_name.replace(".", "_")


def _match_by_value(value: torch.Tensor, candidates: dict[str, np.ndarray]) -> str | None:
    """The unclaimed constant that is this tensor, possibly transposed (the converter renames `x @ P` weights)."""
    ref = value.detach().double().numpy()
    best, best_corr = None, 0.9
    for name, const in candidates.items():
        for view in (const, const.T) if const.ndim == 2 else (const,):
            if view.shape == ref.shape and ref.std() > 0 and view.std() > 0:
                corr = float(np.corrcoef(ref.ravel(), view.astype(np.float64).ravel())[0, 1])
                if corr > best_corr:
                    best, best_corr = name, corr
    return best


def decompressed_tower(path: Path, tower_module: nn.Module) -> tuple[nn.Module, dict]:
    """The PyTorch tower with every weight replaced by its decompressed Core ML value (weights-only proxy).

    `tower_module` must be the affine-folded tower that was converted, so its tensors are the package's
    constants by name (`p_`/`b_` + dotted name), or, for the few the converter renamed, by value.
    """
    import coremltools as ct
    from coremltools.optimize.coreml import decompress_weights, get_weights_metadata

    ml = decompress_weights(ct.models.MLModel(str(path), skip_model_load=True))
    consts = {}
    for name, meta in get_weights_metadata(ml, weight_threshold=2).items():
        for suffix in _NAME_SUFFIXES:
            name = name.removesuffix(suffix)
        consts[name] = np.asarray(meta.val)
    proxy = copy.deepcopy(tower_module).float()
    tensors = [(_mil_name(n, "p_"), t) for n, t in proxy.named_parameters()] + [
        (_mil_name(n, "b_"), t) for n, t in proxy.named_buffers() if t.is_floating_point()]
    pending = [t for key, t in tensors if not _load(t, consts.pop(key, None))]
    unclaimed = {k: v for k, v in consts.items() if v.size > 1}
    unchecked = 0
    for tensor in pending:
        key = _match_by_value(tensor, unclaimed) if tensor.numel() > 1 else None
        if key is not None and _load(tensor, unclaimed[key]):
            del unclaimed[key]
        else:
            unchecked += tensor.numel()
    total = sum(t.numel() for _, t in tensors)
    checked = total - unchecked
    return proxy, {"weights_checked_fraction": round(checked / max(total, 1), 4)}


@torch.no_grad()
def _load(tensor: torch.Tensor, value: np.ndarray | None) -> bool:
    """Copy `value` (or its transpose) into `tensor` if the shapes agree."""
    if value is None:
        return False
    if value.ndim == 2 and value.shape != tuple(tensor.shape) and value.T.shape == tuple(tensor.shape):
        value = value.T
    if value.shape != tuple(tensor.shape):
        return False
    tensor.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))
    return True


def can_predict() -> bool:
    return platform.system() == "Darwin"


def runner(path: Path, tower: str):
    """Run the package with Core ML (macOS only)."""
    import coremltools as ct

    ml = ct.models.MLModel(str(path))

    def run(x: np.ndarray) -> np.ndarray:
        return ml.predict({INPUT_NAME[tower]: x})[OUTPUT_NAME[tower]]

    return run


def metadata_for(variant, tower: str, scheme: str, preprocessing: dict, version: str) -> dict[str, str]:
    """Model metadata shown in Xcode and readable by apps (description, license note, variant, preprocessing)."""
    return {
        "description": f"{variant.display_name} {tower} encoder ({scheme}), folded for inference",
        "license": "Model weights: see the MobileCLIP license of the checkpoint used (Apple sample code license).",
        "author": "mobileclip-deploy",
        "version": version,
        "com.mobileclip.variant": variant.name,
        "com.mobileclip.tower": tower,
        "com.mobileclip.scheme": scheme,
        "com.mobileclip.embed_dim": str(variant.embed_dim),
        "com.mobileclip.preprocessing": json.dumps(preprocessing),
    }

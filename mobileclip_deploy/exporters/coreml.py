"""Core ML export (mlprogram via torch.export; the jit.trace path breaks with numpy 2.4) and Linux-side checks.

Compression touches only `linear` and `conv` weights: by default coremltools compresses every constant over
2048 elements, which ruins token embeddings and positional tables (reference/export-stack.md §0.10).
Core ML cannot run on Linux, so parity executes the saved program itself, op by op (runtimes/coreml_program.py:
every constant and decompressed weight as the file holds it, fp16 results rounded and range-checked), next to a
structural check. The weights-only proxy (`decompressed_tower`: the decompressed weights loaded into the PyTorch
tower) stays for the `auto` search, which scores dozens of plans and needs no conversion per plan.
"""

from __future__ import annotations

import copy
import json
import platform
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters.sensitive import eight_bit_params, float_modules, inside
from mobileclip_deploy.exporters.wrappers import INPUT_NAME, OUTPUT_NAME

_COMPRESSED_OPS = ("constexpr_lut_to_dense", "constexpr_blockwise_shift_scale", "constexpr_affine_dequantize",
                   "constexpr_sparse_to_dense")
_NAME_SUFFIXES = ("_palettized", "_quantized", "_to_fp16")
# Converter names of token embeddings and positional tables (from the PyTorch parameter names).
_TABLE_MARKERS = ("token_embedding", "positional_embedding", "pos_embed")
GROUP = 16  # output channels sharing one palette (iOS18's per_grouped_channel)


def target_at_least(target: str, minimum: str | None) -> bool:
    return minimum is None or int(target.removeprefix("iOS")) >= int(minimum.removeprefix("iOS"))


def _palette(nbits: int, target: str):
    from coremltools.optimize.coreml import OpPalettizerConfig

    if target_at_least(target, "iOS18"):  # per_grouped_channel is an iOS18 feature
        return OpPalettizerConfig(mode="kmeans", nbits=nbits, granularity="per_grouped_channel", group_size=GROUP)
    return OpPalettizerConfig(mode="kmeans", nbits=nbits)


def _compressible(ml, module: nn.Module) -> tuple[dict[str, list[str]], dict[str, tuple[str, np.ndarray]]]:
    """The conv/linear ops consuming each weight constant, and where each tensor of `module` is in `ml`."""
    from coremltools.optimize.coreml import get_weights_metadata

    metadata = get_weights_metadata(ml, weight_threshold=2)
    consumers = {_strip(n): [op.name for op in m.child_ops if op.op_type in ("conv", "linear")]
                 for n, m in metadata.items()}
    return consumers, _locate(module, {_strip(n): np.asarray(m.val) for n, m in metadata.items()})


def _owned(param: str, scopes: list[str]) -> bool:
    """Whether a plan's list (module paths, or a parameter's own path) covers the parameter `param`."""
    return inside(param, scopes) or inside(param.rpartition(".")[0], scopes)


def _compress(ml, scheme: str, target: str, module: nn.Module,
              eight_bit: list[str] | None = None) -> tuple[object, dict]:
    """Compress conv and linear weights only (never embeddings or positional tables); returns (model, facts).

    The layers in `sensitive.float_modules` stay float; `pal4` keeps `sensitive.eight_bit_params` at 8 bits.
    `eight_bit` (an `auto` plan or its recipe) replaces both lists: every conv/linear weight is palettized, those
    it covers at 8 bits.
    """
    from coremltools.optimize.coreml import (
        OpLinearQuantizerConfig,
        OptimizationConfig,
        linear_quantize_weights,
        palettize_weights,
    )

    config = (OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
              if scheme == "w8" else _palette(int(scheme.removeprefix("pal")), target))
    consumers, located = _compressible(ml, module)

    def ops_of(params: list[str]) -> list[str]:
        return [op for p in params if p in located for op in consumers[located[p][0]]]

    params = [p for p, _ in module.named_parameters()]
    if eight_bit is not None:
        per_op = {op: _palette(8, target) for op in ops_of([p for p in params if _owned(p, eight_bit)])}
        facts = {"kept_in_float": [], "kept_at_8_bits": eight_bit}
    else:
        keep = float_modules(module)
        per_op = {op: None for op in ops_of([p for p in params if inside(p.rpartition(".")[0], keep)])}
        facts = {"kept_in_float": keep}
        if scheme == "pal4":
            eight = eight_bit_params(module)
            per_op.update({op: _palette(8, target) for op in ops_of(eight)})
            facts["kept_at_8_bits"] = eight
    optimization = OptimizationConfig(op_type_configs={"linear": config, "conv": config},
                                      op_name_configs=_shared_alike(ml, per_op, config))
    return (linear_quantize_weights if scheme == "w8" else palettize_weights)(ml, optimization), facts


def _shared_alike(ml, per_op: dict[str, object], default) -> dict[str, object]:
    """`per_op` plus the same config for every other op reading a constant a configured op reads.

    The converter merges equal constants (a zero bias and a BatchNorm's zero mean become one), and coremltools
    refuses a constant whose consumers have different configs; the small ones are not compressed anyway.
    """
    from coremltools.optimize.coreml import get_weights_metadata

    configured = {"conv", "linear"}
    out = dict(per_op)
    for meta in get_weights_metadata(ml, weight_threshold=2).values():
        ops = meta.child_ops
        compressed = [op for op in ops if op.name in per_op or op.op_type in configured]
        if not compressed or len(compressed) == len(ops):
            continue
        config = per_op.get(compressed[0].name, default)
        out.update({op.name: config for op in ops if op not in compressed})
    return out


def convert(module: nn.Module, example: torch.Tensor, tower: str, scheme: str, target: str, image_input: bool,
            keep_fp32: set[str] | frozenset[str] = frozenset()):
    """The uncompressed mlprogram of `module` (fp32 compute for `fp32`, fp16 for every other scheme except the ops
    named in `keep_fp32`, as the converter names them before its fp16 pass)."""
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
    return ct.convert(program, inputs=inputs, outputs=[ct.TensorType(name=OUTPUT_NAME[tower], dtype=np.float32)],
                      convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, target),
                      compute_precision=ct.precision.FLOAT32 if scheme == "fp32" else ct.precision.FLOAT16
                      if not keep_fp32 else ct.transform.FP16ComputePrecision(
                          lambda op: op.name not in keep_fp32 and f"type:{op.op_type}" not in keep_fp32),
                      skip_model_load=True)


def palettized_weights(ml, module: nn.Module, target: str, nbits: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """Every tensor of `module` as Core ML stores it with all conv/linear weights at `nbits` palettes
    (decompressed), and the names of the parameters those palettes compress."""
    from coremltools.optimize.coreml import OptimizationConfig, decompress_weights, palettize_weights

    config = _palette(nbits, target)
    pal = palettize_weights(ml, OptimizationConfig(op_type_configs={"linear": config, "conv": config},
                                                   op_name_configs=_shared_alike(ml, {}, config)))
    consumers, located = _compressible(decompress_weights(pal), module)
    compressed = [p for p, _ in module.named_parameters()
                  if p in located and consumers[located[p][0]] and located[p][1].size > config.weight_threshold]
    return {name: value for name, (_, value) in located.items()}, compressed


REPAIR_ROUNDS = 6


class Fp16Overflow(Exception):
    """fp16 overflow that keeping ops in fp32 did not remove (the message names the ops)."""


def _build(module: nn.Module, example: torch.Tensor, tower: str, scheme: str, target: str, image_input: bool,
           eight_bit: list[str] | None, keep_fp32: set[str]) -> tuple[object, dict]:
    ml = convert(module, example, tower, scheme, target, image_input, frozenset(keep_fp32))
    if scheme in ("fp32", "fp16"):
        return ml, {}
    return _compress(ml, scheme, target, module, eight_bit)


def _base(name: str) -> str:
    """An op's name as the converter gave it before the fp16 pass appended `_cast_fp16`."""
    return name.removesuffix("_cast_fp16")


# Data movement the converter's later passes recreate under new names (transposes moved across casts): kept in
# fp32 by type (`type:<op>`), since no name selects them at the fp16 pass.
_MOVEMENT = frozenset({"transpose", "reshape", "slice_by_index", "slice_by_size", "squeeze", "expand_dims",
                       "concat", "split", "tile"})


def fp32_ops_for(program, overflowing: list[str]) -> set[str]:
    """Ops to keep in fp32 for the overflowing ops: each one (unless a cast), the ops computing its inputs, and the
    ops reading its output (an out-of-range value overflows again wherever it is cast back to fp16); data movement
    by type."""
    by_name = {op.name: op for op in program.ops}
    keep = set()
    for name in overflowing:
        op = by_name[name]
        producers = [v.op for v in op.get_flattened_inputs() if v.op is not None]
        consumers = [child for v in op.outputs for child in v.child_ops]
        keep |= {f"type:{o.op_type}" if o.op_type in _MOVEMENT else _base(o.name) for o in [op, *producers, *consumers]
                 if o.op_type != "cast" and o.op_type != "const" and not o.op_type.startswith("constexpr_")}
    return keep


HEADROOM = 4096.0  # fp16 values above this (1/16 of its range) are kept fp32 when the program misses the gate


def _repaired(build, path: Path, inputs: np.ndarray, gate=None, keep_fp32: Sequence[str] = ()) -> tuple[object, dict]:
    """Build (with `keep_fp32`, a recipe's list, in fp32), execute on `inputs`, and while the fp16 program overflows
    rebuild with the overflowing ops (and their producers and consumers) in fp32. If it then misses
    `gate(outputs) -> (passed, min cosine)`, keep the ops whose values come within 16x of fp16's limit in fp32 too,
    once. Returns the model and its facts (`kept_fp32_ops`, what overflowed), or raises Fp16Overflow naming the ops
    when no such choice works."""
    from mobileclip_deploy.runtimes.coreml_program import LENIENT, Program

    keep: set[str] = set(keep_fp32)
    history: list[dict] = []
    widened = False
    for _ in range(REPAIR_ROUNDS + 1):
        ml, facts = build(keep)
        trial = path.parent / f".{path.stem}.fp16-trial.mlpackage"
        ml.save(str(trial))
        try:
            program = Program.load(trial)
            _known(program, keep_fp32)
            feed, output = program.input_names[0], program.output_names[0]
            scale = 255.0 if _image_input(trial) else 1.0
            outputs = np.concatenate([program.run({feed: row[None] * scale if scale != 1.0 else row[None]},
                                                  LENIENT)[output] for row in inputs])
        finally:
            shutil.rmtree(trial, ignore_errors=True)
        report = program.reports[LENIENT]
        summary = report.to_dict()
        if summary["first_overflow"] is None:
            passed, cosine = gate(outputs) if gate is not None else (True, None)
            if passed:
                if keep:
                    facts = {**facts, "kept_fp32_ops": sorted(keep), "fp16_overflow_repaired": history}
                return ml, facts
            hot = [name for name, peak in report.peaks.items() if peak > HEADROOM]
            more = fp32_ops_for(program, hot)
            if widened or more <= keep:
                raise Fp16Overflow(
                    f"the fp16 program misses the parity gate (min cosine {cosine:.6f}) without overflowing"
                    f"{f' after keeping {len(keep)} ops in fp32' if keep else ''}; "
                    + (f"keeping the ops above {HEADROOM:g} in fp32 as well did not help" if widened else
                       f"no op of the rest holds values above {HEADROOM:g}")
                    + f", so precision, not range, is lost: export fp32 instead{_listed(keep)}")
            widened = True
            keep |= more
            continue
        history.append(summary["first_overflow"])
        more = fp32_ops_for(program, [o["op"] for o in summary["overflow_ops"]])
        if more <= keep:
            break
        keep |= more
    first = history[-1]
    raise Fp16Overflow(
        f"fp16 overflow at op {first['op']} ({first['type']}, {first['overflow']} values up to "
        f"{first['max_abs']:.3g}) remains after keeping {len(keep)} ops in fp32: "
        f"{'no op left to keep selects it' if more <= keep else f'{REPAIR_ROUNDS} rounds were not enough'}; "
        f"export fp32 instead{_listed(keep)}")


def _known(program, keep_fp32: Sequence[str]) -> None:
    """A recipe's `keep_fp32` names ops of this program (a typo, or a list written for another model or converter
    version, would keep nothing in fp32 and let the overflow back)."""
    names = {_base(op.name) for op in program.ops} | {f"type:{op.op_type}" for op in program.ops}
    unknown = sorted(set(keep_fp32) - names)
    if unknown:
        raise UserError(f"keep_fp32 names ops this program does not have: {', '.join(unknown[:5])}"
                        f"{' ...' if len(unknown) > 5 else ''} (a recipe written for another model, tower or "
                        "coremltools version?)")


def repair_recipe_text(model: str, tower: str, scheme: str, target: str, facts: dict) -> str:
    """A recipe (export/*.toml style) that rebuilds a repaired program with the same ops in fp32 from the start."""
    first = facts["fp16_overflow_repaired"][0] if facts.get("fp16_overflow_repaired") else None
    why = (f"fp16 overflow first at op {first['op']} ({first['type']}, up to {first['max_abs']:.3g})" if first
           else "no overflow: kept by the recipe this was built from, or for the parity gate")
    lines = [f"# Written by the Core ML fp16 repair for {model} ({tower} tower): these ops compute in fp32, chosen by",
             f"# executing the program on the parity inputs ({why}).",
             f'description = "{model} {tower}: Core ML {scheme}, {len(facts["kept_fp32_ops"])} ops kept in fp32"',
             f'model = "{model}"', f'tower = "{tower}"', "", "[formats.coreml]", f'schemes = ["{scheme}"]',
             f'deployment_target = "{target}"', "", "[formats.coreml.keep_fp32]", f"{tower} = ["]
    lines += [f"  {json.dumps(name)}," for name in facts["kept_fp32_ops"]]
    return "\n".join(lines + ["]", ""])


def _listed(keep: set[str]) -> str:
    names = sorted(keep)
    return f" (kept: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''})" if names else ""


def export(module: nn.Module, example: torch.Tensor, tower: str, scheme: str, path: Path, target: str,
           image_input: bool, metadata: dict[str, str], eight_bit: list[str] | None = None,
           inputs: np.ndarray | None = None, gate=None, keep_fp32: Sequence[str] = ()) -> dict:
    """Write the .mlpackage for `scheme` at deployment `target`; return manifest facts.

    `eight_bit`: the layers a `--quant auto` plan keeps at 8 bits (pal4/pal6 only; see `_compress`).
    `inputs` (the parity inputs): an fp16-computing program is executed on them, and ops that overflow fp16 are
    kept in fp32 (`kept_fp32_ops` in the facts) until none does; `gate(outputs) -> (passed, min cosine)` (the
    parity rule on `inputs`) decides whether the ops near fp16's limit must be kept too. `keep_fp32` (a recipe's
    list, written by an earlier repair) starts the program with those ops in fp32.
    """
    def build(keep: set[str]) -> tuple[object, dict]:
        return _build(module, example, tower, scheme, target, image_input, eight_bit, keep)

    ml, facts = (_repaired(build, path, inputs, gate, keep_fp32) if inputs is not None and scheme != "fp32"
                 else build(set(keep_fp32)))
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
    return {"deployment_target": target, "input_kind": "image" if tower == "image" and image_input else "tensor",
            **facts}


def inspect_structure(path: Path, tower: str) -> dict:
    """What can be checked without a Mac: spec version, named I/O and dtypes, op inventory, compressed weights."""
    import coremltools as ct

    ml = ct.models.MLModel(str(path), skip_model_load=True)
    spec = ml.get_spec()
    ops: Counter[str] = Counter()
    tables: dict[str, str] = {}  # embedding / positional table constant -> "plain" or the compression op
    for block in spec.mlProgram.functions["main"].block_specializations.values():
        for op in block.operations:
            ops[op.type] += 1
            name = op.outputs[0].name if op.outputs else ""
            is_part = "_palettized_" in name or "_quantized_" in name  # a LUT/index input of a compression op
            if any(m in name for m in _TABLE_MARKERS) and not is_part and (op.type == "const" or op.type in _COMPRESSED_OPS):
                tables[_strip(name)] = "plain" if op.type == "const" else op.type

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
    problems += [f"{name} is compressed ({kind}); embedding and positional tables must stay plain"
                 for name, kind in tables.items() if kind != "plain"]
    return {"specification_version": spec.specificationVersion, "inputs": inputs, "outputs": outputs,
            "op_counts": dict(sorted(ops.items())), "tables": tables,
            "compressed_weight_ops": {k: ops[k] for k in _COMPRESSED_OPS if ops[k]}, "problems": problems}


def _strip(mil_name: str) -> str:
    """A weight's converter name without the suffixes casting and compression add (`_to_fp16_palettized`)."""
    for suffix in _NAME_SUFFIXES:
        mil_name = mil_name.removesuffix(suffix)
    return mil_name


def _mil_name(torch_name: str, prefix: str) -> str:
    return prefix + torch_name.replace(".", "_")


def _orient(value: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """`value` shaped like the tensor (a 2-D constant may be stored transposed), or None if it cannot be."""
    if value is None:
        return None
    if value.shape == shape:
        return value
    return value.T if value.ndim == 2 and value.T.shape == shape else None


def _match_by_value(value: torch.Tensor, candidates: dict[str, np.ndarray]) -> tuple[str, np.ndarray] | None:
    """The constant that is this tensor up to compression error, possibly transposed (the converter renames the
    weight of `x @ P`); returns its name and its value in the tensor's orientation (a square one matches both)."""
    ref = value.detach().double().numpy()
    best, best_corr = None, 0.9
    for name, const in candidates.items():
        for view in (const, const.T) if const.ndim == 2 else (const,):
            if view.shape == ref.shape and ref.std() > 0 and view.std() > 0:
                corr = float(np.corrcoef(ref.ravel(), view.astype(np.float64).ravel())[0, 1])
                if corr > best_corr:
                    best, best_corr = (name, view), corr
    return best


def _locate(module: nn.Module, consts: dict[str, np.ndarray]) -> dict[str, tuple[str, np.ndarray]]:
    """For each parameter and float buffer of `module`: the converter constant holding it and its value.

    `module` must be the affine-folded tower that was converted: its tensors are the constants named `p_`/`b_` +
    dotted name, and the few the converter renamed are found by value.
    """
    tensors = [(n, _mil_name(n, "p_"), t) for n, t in module.named_parameters()] + [
        (n, _mil_name(n, "b_"), t) for n, t in module.named_buffers() if t.is_floating_point()]
    unclaimed = dict(consts)
    found, pending = {}, []
    for name, key, tensor in tensors:
        value = _orient(unclaimed.get(key), tuple(tensor.shape))
        if value is None:
            pending.append((name, tensor))
        else:
            found[name] = (key, value)
            del unclaimed[key]
    unclaimed = {k: v for k, v in unclaimed.items() if v.size > 1}
    for name, tensor in pending:
        match = _match_by_value(tensor, unclaimed) if tensor.numel() > 1 else None
        if match is not None:
            found[name] = match
            del unclaimed[match[0]]
    return found


def decompressed_tower(path: Path, tower_module: nn.Module) -> tuple[nn.Module, dict]:
    """The PyTorch tower with every weight replaced by its decompressed Core ML value (weights-only proxy)."""
    import coremltools as ct
    from coremltools.optimize.coreml import decompress_weights

    proxy = copy.deepcopy(tower_module).float()
    _, located = _compressible(decompress_weights(ct.models.MLModel(str(path), skip_model_load=True)), proxy)
    tensors = dict(proxy.named_parameters()) | {n: t for n, t in proxy.named_buffers() if t.is_floating_point()}
    with torch.no_grad():
        for name, (_, value) in located.items():
            tensors[name].copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))
    checked = sum(tensors[name].numel() for name in located)
    total = sum(t.numel() for t in tensors.values())
    return proxy, {"weights_checked_fraction": round(checked / max(total, 1), 4)}


def program_outputs(path: Path, tower: str, inputs: np.ndarray) -> tuple[np.ndarray, dict]:
    """The saved program's outputs on `inputs` (rows of the tower's PyTorch input), executed op by op on this host,
    and what the run found: the arithmetic model judged, for fp16 programs the native model's gap to it and each
    model's overflow / underflow report (the first overflowing op named)."""
    from mobileclip_deploy.runtimes.coreml_program import Program, program_runner

    program = Program.load(path)
    runner = program_runner(program)
    scale = 255.0 if _image_input(path) else 1.0  # an ImageType input takes 0..255 camera pixels
    outputs = runner.batched(inputs * scale if scale != 1.0 else inputs)
    facts = {k: runner.info[k] for k in ("precision", "judged_model", "native_min_cosine", "native_inputs", "fp16")
             if k in runner.info}
    return outputs, facts


def _image_input(path: Path) -> bool:
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    return spec.description.input[0].type.WhichOneof("Type") == "imageType"


def overflow_text(facts: dict) -> str:
    """'; first fp16 overflow at op NAME (TYPE, #i): N values, max |x| M' when the program overflowed, else ''."""
    first = (facts.get("fp16") or {}).get("fp16-storage", {}).get("first_overflow")
    if not first:
        return ""
    return (f"; fp16 overflow first at op {first['op']} ({first['type']}, op {first['index']} of the program): "
            f"{first['overflow']} values, max |x| {first['max_abs']:.3g} > 65504")


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

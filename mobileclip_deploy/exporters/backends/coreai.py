"""Core AI (`.aimodel`, iOS/macOS 27): torch.export -> coreai-torch -> an asset checked on Core AI's Linux runtime.

Flow (coreai-torch 0.4.3, coreai-core 1.0.0b3, coreai-opt 0.4.0): compression through coreai-opt's PyTorch route
(it touches conv/linear/attention weights and leaves the token embedding as it is, like the Core ML exporter) ->
`torch.export` at static batch 1 (further batch sizes become entrypoints `main_b<N>` of the same asset, sharing
weights: a dynamic batch converts but fails at run time in 1.0.0b3) -> `run_decompositions(get_decomp_table())`
(fp16: the tower in half precision inside float32 I/O, int32 tokens) -> `TorchConverter` -> `save_asset`.

Byte-reproducible assets (so a re-export proves itself by its sha256) need three things, two done here: the
converter names deferred graphs with a random 8-letter suffix (`coreai.authoring.graph_builder._randomize_fn_name`,
`secrets.choice`), seeded here; `save_asset` writes the creation time and custom entries in hash-map order, so
`metadata.json` is rewritten with sorted keys and a fixed date (`SOURCE_DATE_EPOCH`, default 1970-01-01). The third
is outside Python: MLIR names each weight blob `resource_<hash>` with LLVM's `hash_value`, whose per-execution
seed is an address in the converter's C++ library, i.e. random under address-space layout randomization. Run the
export without it (Linux: `setarch "$(uname -m)" -R mobileclip-deploy export ...`) and two conversions are
identical (tested); otherwise the weights and graph are the same but the blob names differ. The manifest records
which (`byte_reproducible`); caching is unaffected (a reused file is checked against its recorded sha256).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import json
import math
import os
import random
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import nn

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters import coreai_fp16
from mobileclip_deploy.exporters.backends import Backend, Build, register, tower_lists
from mobileclip_deploy.exporters.context import inputs_sha256
from mobileclip_deploy.exporters.coreai_fp16 import Judged
from mobileclip_deploy.exporters.schemes import FP16, FP32, Scheme
from mobileclip_deploy.exporters.sensitive import float_modules
from mobileclip_deploy.exporters.wrappers import INPUT_NAME, OUTPUT_NAME, Float16Compute

FUNCTION = "main"
PALETTE_GROUP = 16  # output channels per palette (grouped-channel palettization)
PALETTE_BITS = {"pal8": 8, "pal6": 6, "pal4": 4}
# Parity inputs per check, by (fp32 program?, tower): see `parity_count`.
# Two at least, so top-1 agreement and rank correlation compare more than one photo; the centered metrics centre
# on all parity inputs' references (verify/gate.py), so two judge the same rows an 8-input check would.
PARITY_INPUTS = {(True, "image"): 8, (True, "text"): 8, (False, "image"): 2, (False, "text"): 2}
CALIBRATION_LIMIT = 8  # inputs observed for w8a8 activation ranges (each a full forward pass with observers)
SCHEMES = (
    FP32,
    FP16,
    Scheme("pal8", 8, help=f"8-bit k-means palettes, one per {PALETTE_GROUP} output channels; fp16 compute"),
    Scheme("pal6", 6, help=f"6-bit k-means palettes, one per {PALETTE_GROUP} output channels; fp16 compute"),
    Scheme("pal4", 4, help=f"4-bit k-means palettes, one per {PALETTE_GROUP} output channels; fp16 compute"),
    Scheme("w8", 8, help="int8 per-channel weights (conv/linear/attention), fp16 compute"),
    Scheme("w8a8", 8, static=True, help="EXPERIMENTAL until a device confirms int8 execution: static int8 "
           "activations and weights (coreai-opt PT2E, calibration photos); simulated as quantize/dequantize "
           "pairs on the Linux runtime"),
    Scheme("auto", 4, static=True, help=f"4-bit palettes (one per {PALETTE_GROUP} output channels) with the layers "
           "that need it at 8 bits, chosen by measured sensitivity to meet --min-cos/--min-agreement with the "
           "smallest weights (writes a recipe reproducing the plan); fp16 compute", rebuilds_as="pal4"),
)


class LinearAsConv(nn.Conv2d):
    """A linear layer computed as a 1x1 convolution over (1, C, 1, N), N every row of its input: the layout Apple's
    Neural Engine guidance gives transformers. Core AI's reference runtime accumulates an fp16 matrix product in
    fp16 (4097 ones sum to 2048) and runs it ~200x slower than fp32, but accumulates an fp16 convolution in fp32 at
    fp32 speed (benchmarks/coreai_reference_ops.py): MobileCLIP-B's image tower in fp16 measured centered cosine
    0.995812 with linear layers and 0.999670 with these (47 s per input; ~11 min estimated with linears)."""

    def __init__(self, linear: nn.Linear) -> None:
        weight = linear.weight
        super().__init__(linear.in_features, linear.out_features, 1, bias=linear.bias is not None,
                         device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            self.weight.copy_(weight[:, :, None, None])
            if linear.bias is not None:
                self.bias.copy_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_channels).transpose(0, 1)[None, :, None, :]
        return super().forward(rows)[0, :, 0, :].transpose(0, 1).reshape(*x.shape[:-1], self.out_channels)


def linears_as_convs(module: nn.Module) -> nn.Module:
    """A copy of `module` with every `nn.Linear` a `LinearAsConv` under the same path (recipes, keep lists and
    diagnoses name the same modules). Parameters used as matrices directly (a fused in-projection) stay products."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Linear:
                setattr(parent, name, LinearAsConv(child))
    return module


def palette_config(nbits: int, eight_bit: Sequence[str] = ()):
    """coreai-opt k-means palettes of `nbits` per group of output channels; the modules in `eight_bit` (and those
    below them) get 8-bit palettes."""
    from coreai_opt.palettization import (
        KMeansPalettizerConfig,
        ModuleKMeansPalettizerConfig,
    )
    from coreai_opt.palettization.config.palettization_config import (
        OpKMeansPalettizerConfig,
    )
    from coreai_opt.palettization.spec import (
        PalettizationSpec,
        PerGroupedChannelGranularity,
    )

    def config(bits: int) -> ModuleKMeansPalettizerConfig:
        spec = PalettizationSpec(n_bits=bits, granularity=PerGroupedChannelGranularity(axis=0,
                                                                                      group_size=PALETTE_GROUP))
        return ModuleKMeansPalettizerConfig(op_state_spec={key: spec for key in
                                                           OpKMeansPalettizerConfig.get_default_state_spec()})

    return KMeansPalettizerConfig(global_config=config(nbits), module_name_configs={
        re.escape(name): config(8) for name in eight_bit})  # coreai-opt reads these names as regexes (fullmatch)


def _palettizer(module: nn.Module, nbits: int, example: torch.Tensor, eight_bit: Sequence[str] = ()):
    """coreai-opt's k-means palettizer prepared on `module` (rewritten in place: its weights now read back as their
    palettized values). One k-means worker: a forked pool hung for over ten minutes on this stack."""
    from coreai_opt.palettization import KMeansPalettizer

    params = {name for name, _ in module.named_parameters()}  # a plan's unit can be one weight: its module
    owners = [name.rpartition(".")[0] if name in params else name for name in eight_bit]
    palettizer = KMeansPalettizer(module, palette_config(nbits, owners))
    with _interpreter_tools_on_path():
        palettizer.prepare((example,), num_workers=1)
    return palettizer


@contextlib.contextmanager
def _interpreter_tools_on_path() -> Iterator[None]:
    """coreai-opt builds its 1-D k-means with torch's cpp_extension, which runs `ninja` from PATH; a virtualenv used
    without activation (`venv/bin/mobileclip-deploy ...`) has the ninja coreai-opt depends on beside the interpreter
    but not on PATH ("Centroid calculation failed" from "Ninja is required to load C++ extensions")."""
    tools = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if tools in path.split(os.pathsep):
        yield
        return
    os.environ["PATH"] = os.pathsep.join([tools, path]) if path else tools
    try:
        yield
    finally:
        os.environ["PATH"] = path


def palettized_weights(module: nn.Module, example: torch.Tensor, nbits: int) -> tuple[dict[str, np.ndarray],
                                                                                      list[str]]:
    """Every weight that coreai-opt palettizes, at `nbits` palettes (decompressed values), and their names.

    coreai-opt seeds each weight's k-means from its own values, so a weight's palettes do not depend on the other
    weights' settings: these values are what any mix of 4- and 8-bit layers gives (autoquant_coreml)."""
    prepared = copy.deepcopy(module)
    _palettizer(prepared, nbits, example)
    values = {}
    with torch.no_grad():
        for name, owner in prepared.named_modules():
            for param in getattr(owner, "parametrizations", {}):
                values[f"{name}.{param}" if name else param] = getattr(owner, param).detach().numpy().copy()
    return values, list(values)


def int8_float_modules(module: nn.Module) -> list[str]:
    """The modules int8 schemes leave in float: sensitive.py's list, as ExecuTorch and ONNX int8 do. Weight-only int8
    needs it too: on S0's golden image tower (8 photos, PyTorch with the decompressed weights) w8 of every layer gave
    centered cosine 0.907 (min cosine 0.9954; 8-bit limit 0.95), 0.9984 (0.99982) with these 70 modules (14% of the
    weights) in float; the folded RepMixer token mixers' per-channel int8 depthwise kernels cost the most."""
    return float_modules(module)


def compress(module: nn.Module, scheme: str, example: torch.Tensor, calibration: np.ndarray | None = None,
             keep: Sequence[str] = ()) -> nn.Module:
    """A copy of the tower with coreai-opt's compression ops in place of its weights (fp32/fp16: the tower itself);
    coreai-opt rewrites the module it is given, and the pipeline shares one tower between jobs. `keep`: the modules
    kept out of the low-bit form, at 8-bit palettes for palettes (an `auto` plan), in float for int8 (default:
    `int8_float_modules`)."""
    if scheme in ("fp32", "fp16"):
        return module
    module = copy.deepcopy(module)
    from coreai_opt import ExportBackend
    from coreai_opt.quantization import (
        ExecutionMode,
        ModuleQuantizerConfig,
        Quantizer,
        QuantizerConfig,
    )

    if scheme in PALETTE_BITS:
        return _palettizer(module, PALETTE_BITS[scheme], example, keep).finalize(backend=ExportBackend.CoreAI)
    config = (QuantizerConfig.presets.w8(axis=0, execution_mode=ExecutionMode.EAGER) if scheme == "w8"
              else QuantizerConfig(execution_mode=ExecutionMode.EAGER))
    # Nothing quantized inside a kept module (coreai-opt applies a module's config below it; a bare None entry
    # crashes its eager quantizer in 0.4.0); names are regexes to coreai-opt (fullmatch).
    left_float = ModuleQuantizerConfig(op_input_spec={"*": None}, op_output_spec={"*": None}, op_state_spec={"*": None})
    config = config.model_copy(update={"module_name_configs": {
        re.escape(name): left_float for name in (list(keep) or int8_float_modules(module))}})
    quantizer = Quantizer(module, config)
    prepared = quantizer.prepare((example,))
    if scheme == "w8a8":
        if calibration is None or not len(calibration):
            raise ValueError("w8a8 needs calibration inputs")
        with torch.no_grad(), quantizer.calibration_mode(prepared):
            for row in calibration[:CALIBRATION_LIMIT]:
                prepared(torch.from_numpy(np.asarray(row[None], dtype=example.numpy().dtype)))
    return quantizer.finalize(prepared, backend=ExportBackend.CoreAI)


@contextlib.contextmanager
def reproducible_names(seed: int = 0) -> Iterator[None]:
    """Seed the converter's random graph-name suffixes and run its MLIR passes on one thread, so two conversions
    write the same bytes: with threads, the entrypoints' passes race to claim a weight blob's name, and the loser's
    copy is written as `resource_<hash>_1`."""
    from coreai._compiler import context
    from coreai.authoring import func, graph_builder

    class SingleThreaded(context._MLIRContext):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.enable_multithreading(False)

    pick = random.Random(seed).choice
    with mock.patch.object(graph_builder, "choice", pick), mock.patch.object(func, "choice", pick), \
            mock.patch.object(context, "_MLIRContext", SingleThreaded):
        yield


def program(module: nn.Module, example: torch.Tensor, tower: str, fp16: bool, batch_sizes: Sequence[int] = (1,),
            keep_fp32: Sequence[str] = ()):
    """The converted AIProgram: one entrypoint per batch size (`main` is batch 1, others `main_b<N>`)."""
    import coreai_torch

    module = Float16Compute(module, keep_fp32) if fp16 else module
    converter = coreai_torch.TorchConverter()
    with torch.no_grad():
        for batch in sorted({1, *batch_sizes}):
            x = example.expand(batch, *example.shape[1:]).contiguous()
            ep = torch.export.export(module, (x,)).run_decompositions(coreai_torch.get_decomp_table())
            converter.add_exported_program(ep, input_names=[INPUT_NAME[tower]], output_names=[OUTPUT_NAME[tower]],
                                           entrypoint_name=FUNCTION if batch == 1 else f"{FUNCTION}_b{batch}")
    with contextlib.redirect_stdout(sys.stderr):  # its progress bar prints to stdout, which carries results only
        return converter.to_coreai()


def asset_metadata(metadata: dict):
    """AIModelAssetMetadata from the export's metadata dict. Custom values are stored as strings (structured
    ones as JSON text): the runtime reads bare 0/1 back as booleans, strings come back as written."""
    from coreai.runtime import AIModelAssetMetadata

    entries = dict(metadata)
    meta = AIModelAssetMetadata()
    meta.author = str(entries.pop("author", "mobileclip-deploy"))
    meta.license = str(entries.pop("license", ""))
    meta.model_description = str(entries.pop("description", ""))
    for key, value in sorted(entries.items()):
        meta.set_custom(key, value if isinstance(value, str) else json.dumps(value, sort_keys=True))
    return meta


def save(prog, path: Path, metadata: dict) -> None:
    """Write the asset folder, then its metadata.json in a canonical order with a fixed creation date."""
    prog.save_asset(Path(path), metadata=asset_metadata(metadata))
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    _rewrite_metadata(path, lambda written: written.update(
        creationDate=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))))


def _rewrite_metadata(path: Path, change: Callable[[dict], None]) -> None:
    """Apply `change` to the asset's metadata.json and write it back with sorted keys (reproducible bytes); only
    ever on the temporary asset of an export, before its sha256 is taken (main.hash covers main.mlirb alone)."""
    meta_file = Path(path) / "metadata.json"
    written = json.loads(meta_file.read_text())
    change(written)
    meta_file.write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")


PARITY_ENTRY = "parity"
PARITY_FIELDS = ("check", "passed", "decisive", "message", "threshold", "count", "inputs_sha256")


def parity_summary(parity: dict[str, Any]) -> dict[str, Any]:
    """What an asset carries of its parity check: the verdict, the decisive metric and the limited metrics with
    their limits, how many inputs and which (`inputs_sha256`); the manifest keeps the full record."""
    summary = {k: parity[k] for k in PARITY_FIELDS if k in parity}
    limits = parity.get("limits", {})
    summary["metrics"] = {k: parity[k] for k in limits if math.isfinite(parity[k])}
    summary["limits"] = dict(limits)
    return summary


def record_parity(path: Path, parity: dict[str, Any]) -> None:
    """Add the parity check's `parity_summary` to the asset's custom metadata (JSON text, like the other entries)."""
    entry = json.dumps(parity_summary(parity), sort_keys=True)
    _rewrite_metadata(path, lambda written: written["creatorDefinedMetadata"].update({PARITY_ENTRY: entry}))


def read_metadata(path: Path) -> dict:
    """The asset's metadata as the runtime reads it back (author, license, description, custom entries)."""
    from coreai.authoring.asset import AIModelAsset

    meta = AIModelAsset.load(str(path)).metadata
    return {"author": meta.author, "license": meta.license, "description": meta.model_description,
            **meta.creator_defined_metadata}


def parity_count(tower: str, scheme: str, available: int) -> int:
    """How many parity inputs a check runs: all in fp32; fp16-compute programs (every scheme but fp32) run slowly on
    the reference runtime (its fp16 matrix products cost ~200x its fp32 ones, benchmarks/coreai_reference_ops.py; S0
    on a loaded 2-core host, before linear layers became convolutions: image 27-41 s, text 139-167 s per input), so
    fewer."""
    return min(available, PARITY_INPUTS[scheme == "fp32", tower])


def aslr_disabled() -> bool:
    """Whether this process runs without address randomization (Linux `personality` ADDR_NO_RANDOMIZE), which the
    converter's weight-blob names need to be reproducible."""
    try:
        return bool(ctypes.CDLL(None).personality(0xFFFFFFFF) & 0x0040000)
    except (OSError, AttributeError):  # not Linux
        return False


def export_asset(module: nn.Module, example: torch.Tensor, tower: str, scheme: str, path: Path, metadata: dict,
                 calibration: np.ndarray | None = None, keep: Sequence[str] = (),
                 batch_sizes: Sequence[int] = (1,), keep_fp32: Sequence[str] = ()) -> dict:
    """Write the `.aimodel` for `scheme`; return manifest facts. Compressed schemes compute in fp16, as Apple's
    coreai-opt flow does (compress, then cast what is left to fp16); `keep_fp32` names modules computed in fp32
    inside an fp16 program (the fp16 precision repair's islands). Linear layers are written as 1x1 convolutions
    (`LinearAsConv`), before compression so that coreai-opt compresses the convolutions' weights."""
    compressed = compress(linears_as_convs(module.eval()), scheme, example, calibration, keep)
    with reproducible_names():
        prog = program(compressed, example, tower, fp16=scheme != "fp32", batch_sizes=batch_sizes,
                       keep_fp32=keep_fp32)
        save(prog, path, {**metadata, "scheme": scheme})
    facts = {"entrypoints": [FUNCTION, *(f"{FUNCTION}_b{b}" for b in sorted(set(batch_sizes) - {1}))],
             "compute_precision": "fp32" if scheme == "fp32" else "fp16", "minimum_os": "iOS 27 / macOS 27",
             "byte_reproducible": aslr_disabled()}
    if scheme in ("w8", "w8a8"):
        facts["kept_in_float"] = list(keep) or int8_float_modules(module)
    return facts


@register
class CoreAI(Backend):
    name = "coreai"
    suffix = ".aimodel"
    schemes = SCHEMES
    help = "Core AI asset for iOS/macOS 27 (.aimodel), checked on Core AI's Linux reference runtime"
    runtime = "coreai"
    runtime_target = "iOS27"
    platform = "ios"
    extra = "coreai"
    requires = ("coreai_torch", "coreai", "coreai_opt")
    tools = ("coreai-torch", "coreai-core", "coreai-opt")
    # batch_sizes: entrypoints beside batch 1; parity_inputs: how many parity inputs the check runs (None: as
    # PARITY_INPUTS says), for a longer check in a benchmark; keep_fp32 (recipe only, `[formats.coreai.keep_fp32]`,
    # tower -> module paths): the modules an fp16 precision repair kept in fp32, so a rebuild starts from them.
    option_defaults = {"batch_sizes": [1], "parity_inputs": None, "keep_fp32": {}}
    option_types = {"parity_inputs": int}
    keep_key = "keep_8bit"
    auto_titles = {"pal4": "Core AI 4-bit palettes"}

    def resolve(self, scheme: Scheme, options: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        options, notices = super().resolve(scheme, options)
        if options["parity_inputs"] is not None and options["parity_inputs"] < 1:
            raise UserError(f"parity_inputs must be at least 1, not {options['parity_inputs']}")
        keep = options.pop("keep_fp32")  # absent unless given: existing cache keys stay as they were
        if keep:
            if scheme.name != "fp16":
                raise UserError(f"keep_fp32 applies to coreai fp16 (modules kept in fp32 inside its fp16 program); "
                                f"coreai {scheme.name} does not take it")
            options["keep_fp32"] = tower_lists(keep, "keep_fp32", "module paths")
        return options, notices

    def export(self, build: Build) -> tuple[dict[str, Any], Any]:
        from mobileclip_deploy import __version__
        from mobileclip_deploy.exporters.coreml import metadata_for

        build.step(f"converting with coreai-torch ({build.scheme.name})")
        shown = metadata_for(build.variant, build.tower, build.scheme.name, build.metadata["preprocessing"],
                             __version__)  # the description, license note and author Core ML models carry
        metadata = {**{k: shown[k] for k in ("author", "license", "description", "version")}, **build.metadata,
                    "inputs_sha256": inputs_sha256(build.inputs)}
        plan, keep, scheme = None, build.keep or (), build.scheme.rebuilds_as or build.scheme.name
        if build.scheme.rebuilds_as:
            from mobileclip_deploy.exporters.autoquant_coreml import search_coreai

            inputs, anchors, targets = build.context.search_inputs(build.tower)
            plan = search_coreai(build.module, build.example, build.tower, inputs, anchors, targets, build.step)
            build.step("exporting the chosen plan")
            keep = plan.keep
        keep_fp32 = build.options.get("keep_fp32", {}).get(build.tower, [])
        if keep_fp32:
            coreai_fp16.known(build.module, keep_fp32, build.tower)

        def write(islands: Sequence[str]) -> dict[str, Any]:
            return export_asset(build.module, build.example, build.tower, scheme, build.path, metadata,
                                build.calibration, keep, build.options["batch_sizes"], islands)

        if scheme == "fp16" and build.context is not None and build.context.request.parity:
            return coreai_fp16.repair(write, lambda: Judged(*self._run(build, build.path)),
                                      lambda judged: self._judge(build, judged),
                                      lambda: coreai_fp16.growth(build.path, linears_as_convs(build.module),
                                                                 build.inputs[:1]),
                                      keep_fp32, build.step)
        facts = write(keep_fp32)
        if keep_fp32:
            facts["kept_fp32"] = keep_fp32
        if plan is not None:
            facts.update({"kept_at_8_bits": plan.keep, "auto_plan": plan.to_dict()})
        elif build.keep is not None and scheme in PALETTE_BITS:
            facts["kept_at_8_bits"] = build.keep
        return facts, plan

    def check(self, build: Build, path: Path, handle: Any) -> tuple[str, np.ndarray, dict[str, Any]]:
        """Run the first `parity_count` parity inputs on the reference runtime (the gate judges those rows); an fp16
        export already ran its final asset there (the repair judges it), and that run is the check."""
        if isinstance(handle, Judged):
            return handle.check, handle.outputs, handle.extra
        return self._run(build, path)

    def _run(self, build: Build, path: Path) -> tuple[str, np.ndarray, dict[str, Any]]:
        from mobileclip_deploy import runtimes

        count = build.options.get("parity_inputs") or parity_count(build.tower, build.scheme.name, len(build.inputs))
        runner = runtimes.load(path, threads=1, runtime=self.runtime)
        build.step(f"running {count} of {len(build.inputs)} parity inputs on Core AI's Linux reference runtime")
        return "coreai_reference_runtime", runner.batched(build.inputs[:count]), {
            "runtime": runner.info, "parity_inputs_used": count, "parity_inputs_available": len(build.inputs)}

    @staticmethod
    def _judge(build: Build, judged: Judged) -> dict[str, Any]:
        """The gate's verdict on a run, as the pipeline will judge it (the request's limits)."""
        from mobileclip_deploy.exporters.context import judge
        from mobileclip_deploy.exporters.schemes import parse_thresholds

        threshold = parse_thresholds(build.context.request.thresholds)[build.scheme.threshold_class]
        return judge(build.context, build.tower, build.scheme, judged.check, judged.outputs, threshold,
                     dict(judged.extra))

    def recipe(self, build: Build, handle: Any, facts: dict[str, Any]) -> str | None:
        """The fp16 precision repair's choice as a recipe (the modules it kept in fp32), like an `auto` plan's."""
        if not facts.get("kept_fp32"):
            return super().recipe(build, handle, facts)
        return coreai_fp16.recipe_text(build.variant.name, build.tower, facts)

    def diagnose(self, path: Path, module: nn.Module, x: np.ndarray, tol: float, scheme: Scheme) -> dict[str, Any]:
        from mobileclip_deploy.verify.diagnose import coreai as diagnose_coreai

        return diagnose_coreai.compare(path, linears_as_convs(module), x, tol)  # the module as the asset has it

    def checked(self, build: Build, path: Path, parity: dict[str, Any]) -> None:
        """The asset carries its parity result beside `inputs_sha256` (issue 28), written before its sha256."""
        record_parity(path, parity)

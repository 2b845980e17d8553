"""ExecuTorch export: XNNPACK (fp32, static w8a8, dynamic 8da8w/8da4w) and the Core ML delegate (fp32, fp16).

Attention in the models is already explicit `q @ kᵀ * s -> softmax -> @ v` with `chunk`, so XNNPACK takes
it (the stock SDPA lowering leaves a "safe softmax" of portable ops that cost ~40% of the time).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobileclip_deploy.exporters.sensitive import eight_bit_params, float_modules, inside
from mobileclip_deploy.exporters.xnnpack_depthwise import split_depthwise

# Model-level ops XNNPACK 1.5.1 never takes; they are listed, not counted as a failure.
_IGNORED_OPS = {"getitem", "alloc", "output"}


def _module_path(node: torch.fx.Node) -> str:
    """The innermost module a graph node came from (`model.visual.trunk.head.fc`), or '' for top-level ops."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _quantize(module: nn.Module, example: torch.Tensor, scheme: str, calibration: np.ndarray | None,
              keep: list[str], eight: set[str]) -> nn.Module:
    """Return the module with `scheme` applied (PT2E for static int8, torchao for the dynamic schemes).

    Only convs and linears are quantized; the modules in `keep` stay float and, under 8da4w, the weights in
    `eight` stay at 8 bits.
    """
    if scheme == "w8a8":
        assert calibration is not None, "w8a8 needs calibration data (checked when the request was planned)"
        return static_int8(torch.export.export(module, (example,)).module(), calibration, keep)
    if scheme in ("8da8w", "8da4w"):
        from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
        from torchao.quantization.granularity import PerAxis, PerGroup

        int8 = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0))
        int4 = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(32))
        quantized = copy.deepcopy(module)

        def linear(m: nn.Module, fqn: str) -> bool:
            return isinstance(m, nn.Linear) and not inside(fqn, keep)

        quantize_(quantized, int8, filter_fn=lambda m, fqn: linear(m, fqn) and (not eight or f"{fqn}.weight" in eight))
        if eight:
            quantize_(quantized, int4, filter_fn=lambda m, fqn: linear(m, fqn) and f"{fqn}.weight" not in eight)
        return quantized
    return module


def _prepared(graph: torch.fx.GraphModule, keep: list[str]) -> torch.fx.GraphModule:
    """PT2E's observed float model for XNNPACK static int8 of the convs and linears outside `keep`."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    config = get_symmetric_quantization_config(is_per_channel=True)
    quantizer = XNNPACKQuantizer()
    for op in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default):
        quantizer.set_operator_type(op, config)
    # The filter sees every node of a matched pattern (weights too); only ops carry a module path.
    quantizer.set_filter_function(lambda node: node.op != "call_function" or not inside(_module_path(node), keep))
    return prepare_pt2e(graph, quantizer)


def _observer_nodes(prepared: torch.fx.GraphModule) -> list[torch.fx.Node]:
    """The observer calls of a prepared graph; each one's first argument is the node it observes."""
    return [n for n in prepared.graph.nodes if n.op == "call_module" and n.target.startswith("activation_post_process")]


def _observers(prepared: torch.fx.GraphModule) -> dict[str, list[nn.Module]]:
    """The observers of a prepared graph by the node whose output they observe (names survive prepare)."""
    found: dict[str, list[nn.Module]] = {}
    for node in _observer_nodes(prepared):
        found.setdefault(node.args[0].name, []).append(prepared.get_submodule(node.target))
    return found


def _calibrate(prepared: torch.fx.GraphModule, calibration: np.ndarray) -> None:
    for i in range(len(calibration)):
        prepared(torch.from_numpy(calibration[i : i + 1]))


def calibrated_ranges(graph: torch.fx.GraphModule, calibration: np.ndarray) -> dict[str, nn.Module]:
    """Every conv's and linear's observers of `graph` after `calibration`, by observed node, for `static_int8`.

    A prepared model runs in float, so what an observer sees does not depend on which other layers are quantized:
    the observers of a plan that keeps layers float are a subset of these, with the same readings.
    """
    with _released_graphs():
        prepared = _prepared(graph, [])
        _calibrate(prepared, calibration)
        return {name: found[0] for name, found in _observers(prepared).items() if len(found) == 1}


def _setting(observer: nn.Module | None) -> tuple:
    """What an observer measures (its type and int8 format), not what it has seen."""
    values = (getattr(observer, a, None) for a in ("dtype", "qscheme", "quant_min", "quant_max", "ch_axis",
                                                   "reduce_range", "eps"))
    return type(observer), *(v.tolist() if isinstance(v, torch.Tensor) else v for v in values)


def _fill_ranges(prepared: torch.fx.GraphModule, ranges: dict[str, nn.Module]) -> bool:
    """Put copies of the matching calibrated observers in `prepared`; False (nothing changed) unless all match."""
    found = _observers(prepared)
    matched = {name: ranges.get(name) for name in found}
    if any(len(observers) != 1 or _setting(observers[0]) != _setting(matched[name])
           for name, observers in found.items()):
        return False
    for node in _observer_nodes(prepared):
        setattr(prepared, node.target, copy.deepcopy(ranges[node.args[0].name]))
    return True


def static_int8(graph: torch.fx.GraphModule, calibration: np.ndarray, keep: list[str],
                ranges: dict[str, nn.Module] | None = None) -> torch.fx.GraphModule:
    """XNNPACK static int8 (PT2E) of an exported graph: convs and linears outside `keep`, ranges from `calibration`.

    The graph is prepared in place; `--quant auto` passes copies of one export to score many plans, with the
    `calibrated_ranges` of that export so that each plan is not calibrated again.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    with _released_graphs():
        prepared = _prepared(graph, keep)
        if ranges is None or not _fill_ranges(prepared, ranges):
            _calibrate(prepared, calibration)
        return convert_pt2e(prepared)


@contextlib.contextmanager
def _released_graphs() -> Iterator[None]:
    """Let go of the graphs PT2E keeps alive once it is done with them.

    torch 2.13 and torchao cache a module's device with an unbounded `functools.cache` keyed on the module, and
    dynamo's strict export of each quantization pattern leaves a compiled function in a module's globals. Every
    quantized copy stayed in memory: `--quant auto` grew ~55 MB per scored S0 image plan, and B's search ran
    out of memory here.
    """
    import torch._dynamo.functional_export as dynamo_export
    import torch.ao.quantization.fx.utils as ao_fx_utils
    import torchao.utils

    before = set(vars(dynamo_export))
    try:
        yield
    finally:
        for name in set(vars(dynamo_export)) - before:
            if name.startswith("__compiled_fn_"):
                delattr(dynamo_export, name)
        torchao.utils._assert_and_get_unique_device.cache_clear()
        ao_fx_utils.assert_and_get_unique_device.cache_clear()


def _partitioner(delegate: str, scheme: str, target: str):
    if delegate == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return XnnpackPartitioner()
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    precision = ct.precision.FLOAT16 if scheme == "fp16" else ct.precision.FLOAT32
    specs = CoreMLBackend.generate_compile_specs(minimum_deployment_target=getattr(ct.target, target),
                                                 compute_precision=precision)
    return CoreMLPartitioner(compile_specs=specs)


def delegation_summary(graph_module: torch.fx.GraphModule) -> dict:
    """How much of the graph a delegate took: partitions, node counts and the op types left on portable kernels."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    left = {op: b.non_delegated for op, b in info.delegation_by_operator.items()
            if b.non_delegated and op not in _IGNORED_OPS}
    delegated = info.num_delegated_nodes
    total = delegated + sum(left.values())
    return {"partitions": info.num_delegated_subgraphs, "delegated_nodes": delegated,
            "non_delegated_nodes": sum(left.values()),
            "delegated_fraction": round(delegated / total, 4) if total else 0.0,
            "non_delegated_ops": dict(sorted(left.items()))}


def export(module: nn.Module, example: torch.Tensor, scheme: str, delegate: str, path: Path,
           calibration: np.ndarray | None, target: str = "iOS17",
           keep: list[str] | None = None) -> tuple[dict, object]:
    """Write the .pte to `path`; return (manifest facts, the lowered edge program for structure checks).

    `keep`: module paths w8a8 or 8da8w leaves float (a `--quant auto` plan); None keeps sensitive.py's hand-written
    list.
    """
    edge, facts, _ = lower(module, example, scheme, delegate, calibration, target, keep)
    with torch.no_grad():
        path.write_bytes(edge.to_executorch().buffer)
    return facts, edge


def lower(module: nn.Module, example: torch.Tensor, scheme: str, delegate: str, calibration: np.ndarray | None,
          target: str = "iOS17", keep: list[str] | None = None,
          tap: Callable[[torch.export.ExportedProgram], Callable[[torch.fx.Node], bool]] | None = None,
          ) -> tuple[Any, dict, list]:
    """`export`'s lowering: (the edge program, manifest facts, tap specs).

    `tap` returns, for the exported program, which of its nodes' whole outputs become extra program outputs
    (executorch's intermediate-output tap, placed before partitioning and stripped after it; one `TapSpec` each, in
    graph order): diagnose's twin of an artifact, lowered by this same code.
    """
    from executorch.exir import to_edge_transform_and_lower

    # Every XNNPACK scheme takes the split form, w8a8 too: it keeps depthwise convs float (sensitive.py), and
    # unsplit they ran XNNPACK's multipass 7x7 kernel (S0 image tower, 1 thread: 218 ms unsplit vs 73 ms split
    # vs 79 ms fp32; min cosine 0.77 unsplit vs 0.9997 split on held-out photos).
    split = delegate == "xnnpack"
    if keep is None or scheme not in ("w8a8", "8da8w"):
        keep = float_modules(module) if scheme in ("w8a8", "8da8w", "8da4w") else []
    eight = eight_bit_params(module) if scheme == "8da4w" else []
    specs: list = []
    with torch.no_grad():
        quantized = _quantize(split_depthwise(module) if split else module, example, scheme, calibration,
                              keep, set(eight))
        program = torch.export.export(quantized, (example,))
        if tap is not None:
            from executorch.devtools.intermediate_output_tap import (
                FULL_TENSOR,
                tap_intermediate_outputs_,
            )

            program, specs = tap_intermediate_outputs_(program, [(tap(program), FULL_TENSOR)])
        edge = to_edge_transform_and_lower(program, partitioner=[_partitioner(delegate, scheme, target)])
        delegation = delegation_summary(edge.exported_program().graph_module)
        if tap is not None:
            from executorch.devtools.intermediate_output_tap import strip_taps_

            strip_taps_(edge)
    facts = {"delegate": delegate, "delegation": delegation, "split_depthwise": split}
    if scheme in ("w8a8", "8da8w", "8da4w"):
        facts["kept_in_float"] = keep
    if scheme == "8da4w":
        facts["kept_at_8_bits"] = eight
    return edge, facts, specs


def extract_coreml_payload(edge, folder: Path) -> Path:
    """Unpack the model.mlpackage the Core ML delegate embedded, so its structure can be checked on Linux."""
    lowered = [m for _, m in edge.exported_program().graph_module.named_modules() if hasattr(m, "processed_bytes")]
    if len(lowered) != 1:
        raise RuntimeError(f"expected one Core ML partition, found {len(lowered)}")
    return _unpack_coreml(lowered[0].processed_bytes, folder)


def coreml_payload_of(pte: Path, folder: Path) -> Path:
    """The model.mlpackage inside a written Core ML-delegated `.pte` (its delegate data, as the runtime reads it)."""
    from executorch.exir._serialize._program import _extract_delegate_payload

    payload = _extract_delegate_payload(Path(pte).read_bytes(), "coreml")
    if payload is None:
        raise RuntimeError(f"{Path(pte).name} holds no Core ML delegate")
    return _unpack_coreml(payload, folder)


def _unpack_coreml(payload: bytes, folder: Path) -> Path:
    from executorch.backends.apple.coreml import executorchcoreml

    folder.mkdir(parents=True, exist_ok=True)
    executorchcoreml.unflatten_directory_contents(payload, str(folder))
    packages = list(folder.rglob("*.mlpackage"))
    if not packages:
        raise RuntimeError("the Core ML delegate payload holds no .mlpackage")
    return packages[0]

"""`--quant auto` for static int8 (ONNX Runtime QDQ here, ExecuTorch XNNPACK in autoquant_xnnpack.py) and Core ML
palettes (autoquant_coreml.py): choose which layers stay float (or at 8 bits) by measuring, not by a fixed list.

Why these steps (op profiles of S0's image tower, ONNX Runtime 1.32, 1 thread, benchmarks/op_profile.py):
- QLinearConv is fast for dense convs (S0's 50 1x1 convs: 11.4 ms int8 vs 41 ms fp32) but slow for depthwise
  ones (24 7x7 depthwise: 52 ms int8 vs 4.8 ms fp32; 3x3 depthwise 3.8 vs 1.7 ms): MLAS has no fast u8 kernel
  for them, so quantizing every conv made the tower *slower* than fp32 (67 vs 58 ms). Whether depthwise convs
  are quantized is therefore decided first, by timing both forms of the all-int8 model.
- Then each unit (a block's token mixer, MLP, downsample, head...) is quantized alone, and its sensitivity is
  the output cosine and zero-shot top-1 agreement with fp32 on the calibration inputs.
- Units are kept float, most sensitive first, until the whole model meets the targets (a binary search over that
  order, each step measured); among the plans that meet them the fastest measured one wins.
Activation ranges are calibrated once on the float model (MinMax ranges do not depend on what is excluded), so
each candidate costs one quantizer pass and one run over the inputs. Results are cached by content.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobileclip_deploy.atomic import write_text
from mobileclip_deploy.bench.stats import interleaved_medians
from mobileclip_deploy.cache import cache_dir
from mobileclip_deploy import runtimes
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters import onnx as onnx_exp
from mobileclip_deploy.exporters.parity import compare, top1_agreement
from mobileclip_deploy.exporters.sensitive import float_modules, inside, is_depthwise
from mobileclip_deploy.exporters.wrappers import INPUT_NAME
from mobileclip_deploy.hashing import package_source_sha256

PLAN_VERSION = 1
LATENCY_CALLS = 5  # timed calls per candidate and round
LATENCY_ROUNDS = 3


@dataclass(frozen=True)
class Targets:
    min_cosine: float = 0.999
    min_agreement: float = 0.99

    def met(self, score: dict) -> bool:
        return score["min_cosine"] >= self.min_cosine and score["top1_agreement"] >= self.min_agreement


@dataclass
class Plan:
    """What the search chose and why; `keep` (module paths) reproduces the export as `scheme` (w8a8, 8da8w or pal4):
    the layers kept float (int8) or at 8-bit palettes (Core ML pal4)."""

    backend: str
    scheme: str
    tower: str
    targets: dict
    keep: list[str]
    depthwise: dict  # {"quantized": bool, "latency_ms": {...}}
    units: list[dict]  # per unit: name, nodes, min_cosine, top1_agreement (that unit alone quantized)
    steps: list[dict]  # each whole-model candidate measured during the search
    chosen: dict  # score and latency of the chosen plan, fp32 latency, ratio
    cache_key: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def unit_of(scope: str) -> str:
    """A module path cut just below its last numbered container: `...blocks.3.mlp.fc1` -> `...blocks.3.mlp`.

    That groups a block's token mixer, MLP and attention apart while keeping the number of units (and so
    the search time) near three per block.
    """
    parts = scope.split(".")
    numbered = [i for i, p in enumerate(parts) if p.isdigit()]
    return ".".join(parts[: numbered[-1] + 2]) if numbered else scope


def group_units(nodes: list[tuple[str, str, str]]) -> dict[str, list[str]]:
    """(node, owning module path, op key) triples grouped by unit: node names per unit.

    An op owned by a module that is an ancestor of other units (the text projection `model.text`, above every
    block) is a unit of its own, named by its op key (`module/op`): kept float as a module path it would take every
    block along.
    """
    modules = {unit_of(module) for _, module, _ in nodes}
    units: dict[str, list[str]] = {}
    for name, module, op in nodes:
        unit = unit_of(module)
        if not module or any(other != unit and inside(other, [unit]) for other in modules):
            unit = op
        units.setdefault(unit, []).append(name)
    return units


def _quantizable(model, tower_module: nn.Module) -> tuple[dict[str, list[str]], list[str]]:
    """Quantizable ONNX nodes grouped by unit, and the names of the depthwise conv nodes among them."""
    depthwise_modules = {n for n, m in tower_module.named_modules() if is_depthwise(m)}
    nodes = []
    for node in model.graph.node:
        if node.op_type in onnx_exp.QUANT_OP_TYPES["w8a8"]:
            scopes = onnx_exp.node_scopes(node)
            nodes.append((node.name, scopes[-2] if len(scopes) >= 2 else "", onnx_exp.op_key(scopes)))
    return group_units(nodes), [name for name, module, _ in nodes if module in depthwise_modules]


def _hash_arrays(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(str(a.shape).encode() + str(a.dtype).encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def _weights_hash(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class _Search:
    """One tower's search state: the float ONNX model, its calibrated ranges, the reference outputs.

    Subclasses for other runtimes that quantize a float file (LiteRT: autoquant_litert.py) replace `_graph`,
    `_calibrate`, `quantized`, `units` and `nodes_in`; scoring and timing run on `runtime`."""

    backend, scheme, kind, kept_as, baseline, cost_name = "onnx", "w8a8", "int8", "float", "fp32", "latency_ms"
    runtime = "onnxruntime"

    def __init__(self, raw: Path, module: nn.Module, tower: str, calibration: np.ndarray, inputs: np.ndarray,
                 anchors: np.ndarray, work: Path) -> None:
        self.raw, self.module, self.tower, self.inputs, self.anchors = raw, module, tower, inputs, anchors
        self.work = work
        self.graph = self._graph()
        self.ranges = self._calibrate(calibration)
        self.reference = self._outputs(raw)
        self._count = 0

    def _graph(self):
        import onnx

        return onnx.load(str(self.raw))

    def _calibrate(self, calibration: np.ndarray):
        from onnxruntime.quantization import CalibrationMethod
        from onnxruntime.quantization.calibrate import create_calibrator

        calibrator = create_calibrator(self.raw, onnx_exp.QUANT_OP_TYPES["w8a8"],
                                       augmented_model_path=str(self.work / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.MinMax)
        calibrator.collect_data(onnx_exp._CalibrationReader(INPUT_NAME[self.tower], calibration))
        return calibrator.compute_data()

    def quantized(self, exclude: list[str]) -> Path:
        """Write the static QDQ model with the nodes in `exclude` left float (the exporter's w8a8 settings)."""
        import onnx
        from onnxruntime.quantization import QuantType
        from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

        quantizer = QDQQuantizer(onnx.load(str(self.raw)), True, True, QuantType.QInt8, QuantType.QUInt8,
                                 self.ranges, [], exclude, onnx_exp.QUANT_OP_TYPES["w8a8"], {})
        quantizer.quantize_model()
        self._count += 1
        path = self.work / f"candidate{self._count % 2}.onnx"
        quantizer.model.save_model_to_file(str(path))
        return path

    def units(self) -> tuple[dict[str, list[str]], list[str]]:
        return _quantizable(self.graph, self.module)

    def nodes_in(self, modules: list[str]) -> list[str]:
        return onnx_exp._nodes_in(self.graph, modules)

    def decide_depthwise(self, depthwise: list[str], step) -> tuple[bool, dict]:
        """Quantize depthwise convs only if the all-int8 model is at least as fast as with them float (MLAS)."""
        step("auto: timing depthwise convs int8 vs float")
        ms = self.cost({"fp32": None, "all_int8": [], "depthwise_float": depthwise})
        return ms["all_int8"] <= ms["depthwise_float"], {"latency_ms": ms}

    def confirm(self, exclude: list[str]) -> None:
        """No second opinion needed: every score above already ran on the runtime itself."""
        return None

    def hand_written(self) -> list[str]:
        return float_modules(self.module)

    def _outputs(self, path: Path) -> np.ndarray:
        return runtimes.load(path, runtime=self.runtime).batched(self.inputs)

    def score(self, exclude: list[str]) -> dict:
        out = self._outputs(self.quantized(exclude))
        cos = compare(self.reference, out)["min_cosine"]
        return {"min_cosine": round(cos, 7),
                "top1_agreement": round(top1_agreement(self.reference, out, self.anchors), 4)}

    def cost(self, candidates: dict[str, list[str] | None]) -> dict[str, float]:
        """Median ms per candidate (None: fp32) at 1 thread, timed in interleaved rounds against load drift."""
        runners = {name: runtimes.load(self.raw if exclude is None else self.quantized(exclude), runtime=self.runtime)
                   for name, exclude in candidates.items()}
        return interleaved_ms({name: lambda r=runner: r(self.inputs[:1]) for name, runner in runners.items()})


def interleaved_ms(calls: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median ms of each candidate's call, timed in interleaved rounds so load drift hits all alike."""
    return {n: round(ms, 3) for n, ms in interleaved_medians(calls, LATENCY_ROUNDS, LATENCY_CALLS).items()}


def search_key(backend: str, module: nn.Module, tower: str, calibration: np.ndarray, inputs: np.ndarray,
               anchors: np.ndarray, targets: Targets) -> str:
    """What a search's result depends on: backend, weights, photos, prompts, targets and this package's code."""
    return hashlib.sha256(json.dumps({
        "version": PLAN_VERSION, "backend": backend, "tower": tower, "weights": _weights_hash(module),
        "calibration": _hash_arrays(calibration), "inputs": _hash_arrays(inputs, anchors),
        "targets": asdict(targets), "source": package_source_sha256()}, sort_keys=True).encode()).hexdigest()


def cached_search(key: str, make_search: Callable[[Path], object], targets: Targets, step: Callable[[str], None],
                  use_cache: bool, searched: Callable[[object, Plan], None] = lambda search, plan: None) -> Plan:
    """The cached plan for `key`, or a new search (`make_search(work folder)`) whose plan is then cached.

    `searched(search, plan)` runs after a new search, while its work folder (the candidates it exported) exists.
    """
    cached = cache_dir("autoquant") / f"{key}.json"
    if use_cache and cached.is_file():
        try:
            data = json.loads(cached.read_text(encoding="utf-8"))
            step("auto: reusing the cached search")
            return Plan(**data)
        except (ValueError, TypeError):
            pass  # a damaged cache entry is searched again and overwritten
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="autoquant.") as tmp:
        search = make_search(Path(tmp))
        plan = _search(search, targets, step)
        plan.cache_key, plan.seconds = key, round(time.perf_counter() - start, 1)
        if use_cache:
            write_text(cached, json.dumps(plan.to_dict(), indent=1), replace=True)
        searched(search, plan)
    return plan


def search_onnx(module: nn.Module, example: torch.Tensor, tower: str, calibration: np.ndarray, inputs: np.ndarray,
                anchors: np.ndarray, targets: Targets, step: Callable[[str], None] = lambda _: None,
                use_cache: bool = True) -> Plan:
    """Find the fastest ORT static-int8 plan of `module` meeting `targets` on `inputs` (cached by content)."""

    def make(work: Path) -> _Search:
        step("auto: exporting and calibrating")
        onnx_exp._torch_export(module, example, tower, work / "raw.onnx")
        return _Search(work / "raw.onnx", module, tower, calibration, inputs, anchors, work)

    key = search_key("onnx", module, tower, calibration, inputs, anchors, targets)
    return cached_search(key, make, targets, step, use_cache)


def _search(search, targets: Targets, step) -> Plan:
    """The search itself, for any backend's search object (units, scores, depthwise choice, cost: latency or size).

    "Float" below means kept out of the low-bit form: float for int8, 8-bit palettes for Core ML's 4-bit ones.
    """
    module, tower = search.module, search.tower
    units, depthwise = search.units()
    every = [n for nodes in units.values() for n in nodes]
    quantize_dw, dw_facts = search.decide_depthwise(depthwise, step) if depthwise else (True, {})
    forced = [] if quantize_dw else depthwise
    # A unit's nodes as the plan would quantize them; units left with nothing to quantize drop out.
    live = {u: [n for n in nodes if n not in forced] for u, nodes in units.items()}
    live = {u: nodes for u, nodes in live.items() if nodes}
    scores = []
    for i, (unit, nodes) in enumerate(live.items(), 1):
        step(f"auto: sensitivity {i}/{len(live)} {unit}")
        others = [n for n in every if n not in nodes]
        scores.append({"unit": unit, "nodes": len(nodes), **search.score(others)})
    order = sorted(scores, key=lambda s: (s["min_cosine"] + s["top1_agreement"], s["unit"]))
    steps: list[dict] = []

    def measured(k: int) -> dict:
        kept = [s["unit"] for s in order[:k]]
        exclude = forced + [n for u in kept for n in live[u]]
        step(f"auto: whole model with {k} unit(s) float")
        result = {"float_units": k, **search.score(exclude)}
        steps.append(result)
        return result

    # Smallest prefix of the sensitivity order that meets the targets, by binary search: prefix `low` fails,
    # prefix `high` passes (all units float is fp32, assumed to pass and never worth measuring).
    low, high = -1, len(order)
    if targets.met(measured(0)):
        high = 0
    else:
        low = 0
    while high - low > 1:
        mid = (low + high) // 2
        if targets.met(measured(mid)):
            high = mid
        else:
            low = mid
    if high >= len(order):
        best = max(steps, key=lambda s: (s["min_cosine"], s["top1_agreement"]), default=None)
        raise UserError(
            f"--quant auto: no {search.kind} plan of the {tower} tower meets min cosine {targets.min_cosine} and "
            f"top-1 agreement {targets.min_agreement} on the calibration inputs: even keeping all but one unit "
            f"{search.kept_as} gives {best}; lower --min-cos / --min-agreement or use fp32/fp16")
    def plan_nodes(k: int) -> list[str]:
        return forced + [n for u in order[:k] for n in live[u["unit"]]]

    def on_runtime(nodes: list[str], simulated: Callable[[], dict]) -> dict:
        confirmed = search.confirm(nodes)  # None: the runtime is what `score` runs (the simulation is not needed)
        return simulated() if confirmed is None else confirmed

    scored = {"auto": on_runtime(plan_nodes(high), lambda: next(s for s in steps if s["float_units"] == high))}
    # Where the runtime's numerics miss what the simulation met, keep more units float: 1, 2, 4... more (all of
    # them float would be no int8 plan at all).
    more = 1
    while not targets.met(scored["auto"]) and high < len(order) - 1:
        high, more = min(len(order) - 1, high + more), more * 2
        step(f"auto: the runtime missed the targets; whole model with {high} unit(s) float")
        scored["auto"] = on_runtime(plan_nodes(high), lambda: search.score(plan_nodes(high)))
        steps.append({"float_units": high, **scored["auto"]})
    kept = [s["unit"] for s in order[:high]]
    candidates = {"auto": plan_nodes(high)}
    hand = search.hand_written()
    hand_nodes = search.nodes_in(hand)
    hand_score = search.score(hand_nodes)
    steps.append({"float_units": "hand-written lists (sensitive.py)", **hand_score})
    if targets.met(hand_score):
        candidates["hand"] = hand_nodes
        scored["hand"] = on_runtime(hand_nodes, lambda: hand_score)
    passing = [n for n in candidates if targets.met(scored[n])]
    if not passing:
        raise UserError(
            f"--quant auto: no {search.kind} plan of the {tower} tower meets min cosine {targets.min_cosine} and "
            f"top-1 agreement {targets.min_agreement} on the {search.backend} runtime ({scored}); lower --min-cos / "
            "--min-agreement or use fp32/fp16")
    step(f"auto: measuring {search.cost_name} of the plans that meet the targets")
    base, name = search.baseline, search.cost_name
    cost = search.cost({base: None, **{n: candidates[n] for n in passing}})
    pick = min(passing, key=lambda n: cost[n])
    if pick == "hand":
        keep = hand
    else:
        keep = sorted(kept + ([] if quantize_dw else [n for n, m in module.named_modules() if is_depthwise(m)]))
    score = scored[pick]
    return Plan(backend=search.backend, scheme=search.scheme, tower=tower, targets=asdict(targets), keep=keep,
                depthwise={"quantized": quantize_dw, **dw_facts}, units=scores, steps=steps,
                chosen={"from": "search" if pick == "auto" else f"hand-written list (lower {name}, also meets "
                        "targets)", "float_units": kept if pick == "auto" else hand, "min_cosine": score["min_cosine"],
                        "top1_agreement": score["top1_agreement"], "scored_on": score.get("on", search.backend),
                        "kept_as": search.kept_as, "cost": name, "baseline": base, name: cost[pick],
                        f"{base}_{name}": cost[base], f"ratio_to_{base}": round(cost[pick] / cost[base], 3),
                        "candidates": cost})


def recipe_text(plan: Plan, model: str, calibration: Path, calibration_limit: int) -> str:
    """A recipe (export/*.toml style) that rebuilds the chosen artifact as `plan.scheme` without searching again."""
    from mobileclip_deploy.exporters.backends import get_backend

    backend = get_backend(plan.backend)
    base = plan.chosen["baseline"]
    lines = [f"# Written by `--quant auto` for {model} ({plan.tower} tower): reproduces the chosen plan",
             f"# without the search. Plan cache key {plan.cache_key[:16]}; chosen: cosine "
             f"{plan.chosen['min_cosine']}, top-1 agreement {plan.chosen['top1_agreement']}, "
             f"{plan.chosen[f'ratio_to_{base}']}x the {base} {plan.chosen['cost']} on the search host.",
             f'description = "{model} {plan.tower}: {backend.auto_titles[plan.scheme]}, kept layers chosen by '
             '--quant auto"',
             f'model = "{model}"', f'tower = "{plan.tower}"', f"calibration = {json.dumps(str(Path(calibration).resolve()))}",
             f"calibration_limit = {calibration_limit}", "", f"[formats.{plan.backend}]",
             f'schemes = ["{plan.scheme}"]', "", f"[formats.{plan.backend}.{backend.keep_key}]",
             f"{plan.tower} = ["]
    lines += [f"  {json.dumps(name)}," for name in plan.keep]
    return "\n".join(lines + ["]", ""])


PAYS_BELOW = 0.95  # an int8 plan within 5% of fp32 latency buys size, not speed


def plan_summary(plan: Plan) -> str:
    """One line for the user: what the plan keeps, how it scored, and whether it pays on this host.

    Whether int8 is faster depends on the CPU (XNNPACK's int8 GEMM is no faster than its fp32 one on avx2-only
    x86), so a plan that is not faster says so instead of leaving the user to assume it.
    """
    chosen, base = plan.chosen, plan.chosen["baseline"]
    ratio, agreement = chosen[f"ratio_to_{base}"], chosen["top1_agreement"]
    what = "latency on this host" if chosen["cost"] == "latency_ms" else "weight size"
    line = (f"--quant auto keeps {len(plan.keep)} modules {chosen['kept_as']}; min cosine {chosen['min_cosine']:.5f}, "
            f"top-1 agreement {agreement:.0%} on the calibration inputs; {ratio}x the {base} {what}")
    if chosen["cost"] == "latency_ms" and ratio >= PAYS_BELOW:
        line += (": int8 buys size, not speed, on this CPU (the target device may differ: time it there with "
                 "`mobileclip-deploy bench`)")
    return line


def check_targets(min_cos: float, min_agreement: float) -> Targets:
    for name, value in (("--min-cos", min_cos), ("--min-agreement", min_agreement)):
        if not 0.0 < value <= 1.0:
            raise UserError(f"{name} {value} must be in (0, 1]")
    return Targets(min_cos, min_agreement)


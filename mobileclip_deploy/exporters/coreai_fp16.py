"""Core AI fp16 precision repair: the modules whose fp16 error grows most are kept in fp32 until the gate passes.

Core AI's reference runtime computes an fp16 program in fp16, accumulation included (a 4097-term dot product of ones
gives 2048), so a tower can miss the fp16 gate where Core ML's fp16 (fp32 accumulation) passes. When the asset
fails the gate on the parity inputs, its program is run once more with an intermediate logger
(verify/diagnose/coreai.py), each module's output is compared with the fp32 PyTorch trace, and the modules that add
the most error (output error minus input error) become fp32 islands (`wrappers.Float32Island`); the asset is rebuilt
and judged again, for at most `ROUNDS` rounds. Every round costs a conversion, a gate run and a logged run on the
reference runtime (measured on a shared 2-core host while linear layers were still matrix products: ~3 min per round
for S0's text tower, ~3.5 min for MobileCLIP2-S0's), so three rounds bound the repair to about ten minutes per tower
beyond the export. Since the export writes linear layers as convolutions (which that runtime accumulates in fp32),
S0's towers need no round and the text towers of MobileCLIP2-S0 and MobileCLIP-B one (the first block's attention).
A tower that still fails keeps the gate's verdict (limits are never loosened).
The kept modules go into the manifest and a recipe (`[formats.coreai.keep_fp32]`) that rebuilds the same asset.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.verify.diagnose import Record, Trace

ROUNDS = 3  # rebuilds at most: each costs a conversion and two reference-runtime passes
PER_ROUND = 4  # modules kept in fp32 per round: the worst few, since fp16 error is spread over every product
SHARE = 0.25  # a module is kept only if it adds at least this share of the error the worst one adds


@dataclass
class Judged:
    """The gate's run of the final asset: outputs on the parity inputs and the check's facts (reused by `check`)."""

    check: str
    outputs: np.ndarray
    extra: dict[str, Any]


def known(module: nn.Module, keep: Sequence[str], tower: str) -> None:
    """A recipe's `keep_fp32` names modules of this tower (a typo would leave the module meant to stay in fp16)."""
    names = {name for name, _ in module.named_modules() if name}
    unknown = [name for name in keep if name not in names]
    if unknown:
        raise UserError(f"keep_fp32 ({tower}) names {', '.join(repr(n) for n in unknown[:5])}, which is no module of "
                        f"the {tower} tower (a recipe written for another model?); nothing was exported")


def growth(path: Path, module: nn.Module, x: np.ndarray) -> dict[str, float]:
    """Relative error each module adds on `x` in the asset at `path` (one logged run on the reference runtime)."""
    from mobileclip_deploy.verify.diagnose import coreai as diagnose_coreai

    return added_error(*diagnose_coreai.records(path, module, x))


def added_error(trace: Trace, records: list[Record]) -> dict[str, float]:
    """Each innermost recorded module's output error against the fp32 trace minus its input's, the input being the
    output of the module PyTorch computed it with (else the module that finished last before it). Innermost: no
    recorded submodule computes another value (an attention whose only recorded submodule is its output projection
    counts, and holds its products).

    A module's error counts only as far as the next record with another value shows it: the converter attributes
    some ops to a neighbouring module (a residual add to the linear before it), so a module's logged value can be
    another tensor (relative error ~1 while everything after it agrees); an error that matters shows downstream."""
    from mobileclip_deploy.verify.diagnose import relative_error

    error = {owner: min(e for e in (relative_error(value, ref) for ref in trace.expected(owner)) if e is not None)
             for owner, _, value, _ in records}
    owners = [owner for owner, *_ in records]
    for index, name in enumerate(owners):
        later = [o for o in owners[index + 1:] if not _same(trace, o, name)]
        if later:
            error[name] = min(error[name], error[later[0]])
    order = [name for name in trace.order if name in error]
    added = {}
    for index, name in enumerate(order):
        if any(o.startswith(name + ".") and not _same(trace, o, name) for o in order):
            continue  # a block, not a place: its error is its measured submodules' (kept, they fix it)
        before = [p for p in order[:index] if not p.startswith(name + ".")]
        given = trace.inputs.get(name)
        producers = [p for p in before if given is not None and _equal(trace.outputs[p], given)]
        source = producers[-1] if producers else (before[-1] if before else None)
        added[name] = error[name] - (error[source] if source else 0.0)
    return added


def _same(trace: Trace, a: str, b: str) -> bool:
    return _equal(trace.outputs[a], trace.outputs[b])


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b)


def worst(added: dict[str, float], kept: Sequence[str], count: int) -> list[str]:
    """At most `count` modules adding the most error, each at least `SHARE` of the most any adds (a whole encoder
    adds a little everywhere: kept for that, it would leave nothing in fp16), not kept yet, nor inside or around a
    kept one. Of a module and a submodule that give the same output (an attention and its output projection), the
    module: its error includes its own ops (the attention's products)."""
    free = {n: e for n, e in added.items()
            if not any(n == k or n.startswith(k + ".") or k.startswith(n + ".") for k in kept)}
    floor = SHARE * max(free.values(), default=0.0)
    chosen: list[str] = []
    for name in sorted(free, key=lambda n: (-free[n], n.count("."))):
        if len(chosen) == count or free[name] <= 0 or free[name] < floor:
            break
        if any(name.startswith(k + ".") or k.startswith(name + ".") for k in chosen):
            continue
        chosen.append(name)
    return chosen


def repair(write: Callable[[list[str]], dict[str, Any]], run: Callable[[], Judged],
           judge: Callable[[Judged], dict[str, Any]], added: Callable[[], dict[str, float]],
           keep: Sequence[str], step: Callable[[str], None]) -> tuple[dict[str, Any], Judged]:
    """Write the asset with `keep` in fp32 (`write(keep) -> facts`), `run` it on the parity inputs and `judge` it;
    while it fails, keep the modules `added` (errors measured on the asset) names worst, for at most ROUNDS
    rebuilds. Returns the final asset's facts (with `kept_fp32` and the rounds) and its judged run."""
    keep = list(keep)
    rounds: list[dict[str, Any]] = []
    for attempt in range(ROUNDS + 1):
        facts = write(keep)
        step(f"fp16 repair: running the parity inputs ({len(keep)} modules in fp32)" if attempt
             else "running the parity inputs on Core AI's reference runtime")
        judged = run()
        verdict = judge(judged)
        if rounds:
            rounds[-1]["after"] = _metrics(verdict)
        if verdict["passed"] is not False or attempt == ROUNDS:
            break
        step(f"fp16 repair round {attempt + 1}/{ROUNDS}: {verdict['message']}; measuring each module's fp16 error")
        more = worst(added(), keep, PER_ROUND)
        if not more:
            break
        step(f"fp16 repair round {attempt + 1}/{ROUNDS}: keeping {', '.join(more)} in fp32")
        rounds.append({"before": _metrics(verdict), "kept": more})
        keep += more
    if keep:
        facts["kept_fp32"] = keep
    if rounds:
        facts["fp16_repair"] = rounds
        if verdict["passed"] is False:
            judged.extra["failure_note"] = (f"; the fp16 repair kept {len(keep)} modules in fp32 over {len(rounds)} "
                                            f"rounds ({', '.join(keep[:8])}{', ...' if len(keep) > 8 else ''}) and "
                                            "the asset still fails: export fp32 instead")
    return facts, judged


def _metrics(verdict: dict[str, Any]) -> dict[str, Any]:
    return {k: verdict[k] for k in ("passed", "message", "decisive", "min_cosine", "centered_cosine", "psnr_db") if k in verdict}


def recipe_text(model: str, tower: str, facts: dict[str, Any]) -> str:
    """A recipe (export/*.toml style) that rebuilds the repaired asset with the same modules in fp32."""
    rounds = facts.get("fp16_repair") or []
    why = (f"without them the asset failed the gate ({rounds[0]['before']['message']})" if rounds
           else "kept by the recipe this asset was built from")
    lines = [f"# Written by the Core AI fp16 precision repair for {model} ({tower} tower): these modules compute in",
             f"# fp32 inside the fp16 program, chosen on Core AI's reference runtime: {why}.",
             f'description = "{model} {tower}: Core AI fp16, {len(facts["kept_fp32"])} modules kept in fp32"',
             f'model = "{model}"', f'tower = "{tower}"', "", "[formats.coreai]", 'schemes = ["fp16"]', "",
             "[formats.coreai.keep_fp32]", f"{tower} = ["]
    lines += [f"  {json.dumps(name)}," for name in facts["kept_fp32"]]
    return "\n".join(lines + ["]", ""])

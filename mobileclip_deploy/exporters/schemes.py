"""Quantization schemes and the parity thresholds of their precision classes (backends list the schemes they take)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.verify.gate import DEFAULT_LIMITS, check_override

TOWERS = ("image", "text")

# Minimum cosine similarity to the folded PyTorch model, by precision class (configurable per run); the gate's
# other limits are in verify/gate.py.
DEFAULT_THRESHOLDS = {cls: limits["min_cosine"] for cls, limits in DEFAULT_LIMITS.items()}


@dataclass(frozen=True)
class Scheme:
    name: str
    bits: int  # weight bits (32, 16, 8, 6, 4): decides the parity threshold class
    static: bool = False  # static activation quantization: needs calibration images
    min_target: str | None = None  # lowest CoreML deployment target that can express it
    help: str = ""
    rebuilds_as: str | None = None  # an `auto` scheme: the scheme its plan (and recipe) rebuilds the artifact as

    @property
    def threshold_class(self) -> str:
        if self.bits >= 32:
            return "fp32"
        if self.bits == 16:
            return "fp16"
        return "8bit" if self.bits > 4 else "4bit"


FP32 = Scheme("fp32", 32, help="float32 weights and compute")
FP16 = Scheme("fp16", 16, help="float16 weights and compute")

def did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_thresholds(values: dict[str, float] | None) -> dict[str, float]:
    """Merge user thresholds over the defaults: `fp32`, `fp16`, `8bit`, `4bit` set the minimum cosine,
    `CLASS.METRIC` another gate limit (e.g. `8bit.centered_cosine`); unknown classes and metrics are refused."""
    merged = dict(DEFAULT_THRESHOLDS)
    for key, value in (values or {}).items():
        cls = key.partition(".")[0]
        if cls not in DEFAULT_THRESHOLDS:
            raise UserError(f"unknown threshold class {cls!r}{did_you_mean(cls, list(DEFAULT_THRESHOLDS))}; "
                            f"use one of {', '.join(DEFAULT_THRESHOLDS)}")
        problem = check_override(key, float(value))
        if problem:
            raise UserError(problem)
        merged[key] = float(value)
    return merged

"""Quantization schemes and the parity thresholds of their precision classes (backends list the schemes they take)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from mobileclip_deploy.errors import UserError

TOWERS = ("image", "text")

# Minimum cosine similarity to the folded PyTorch model, by precision class (configurable per run).
DEFAULT_THRESHOLDS = {"fp32": 0.99999, "fp16": 0.999, "8bit": 0.99, "4bit": 0.98}


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
    """Merge user thresholds (`fp32`, `fp16`, `8bit`, `4bit`) over the defaults, refusing unknown classes."""
    merged = dict(DEFAULT_THRESHOLDS)
    for key, value in (values or {}).items():
        if key not in merged:
            raise UserError(f"unknown threshold class {key!r}{did_you_mean(key, list(merged))}; "
                            f"use one of {', '.join(merged)}")
        if not 0.0 < float(value) <= 1.0:
            raise UserError(f"threshold {key}={value} must be a cosine similarity in (0, 1]")
        merged[key] = float(value)
    return merged

"""The format registry: what each backend is called, writes and supports, so bad requests fail before any work."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.verify.gate import DEFAULT_LIMITS, check_override

TOWERS = ("image", "text")

# Minimum cosine similarity to the folded PyTorch model, by precision class (configurable per run); the gate's
# other limits are in verify/gate.py.
DEFAULT_THRESHOLDS = {cls: limits["min_cosine"] for cls, limits in DEFAULT_LIMITS.items()}

IOS_TARGETS = ("iOS16", "iOS17", "iOS18")


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


@dataclass(frozen=True)
class Backend:
    name: str  # also the `<backend>` part of artifact file names and the manifest's `backend`
    suffix: str
    schemes: tuple[Scheme, ...]
    runs_here: bool  # can its runtime execute the artifact on this (Linux) machine
    help: str
    # The recipe key listing the layers an `auto` plan keeps out of the low-bit form (float for int8, 8-bit
    # palettes for pal4); None: no `auto` scheme.
    keep_key: str | None = None

    def scheme(self, name: str) -> Scheme:
        for scheme in self.schemes:
            if scheme.name == name:
                return scheme
        raise UserError(
            f"{self.name} does not support the quantization scheme {name!r}{_did_you_mean(name, self.scheme_names)}; "
            f"{self.name} supports: {', '.join(self.scheme_names)}"
        )

    @property
    def scheme_names(self) -> list[str]:
        return [s.name for s in self.schemes]

    @property
    def rebuilt(self) -> set[str]:
        """The schemes `auto` plans rebuild as: the ones a recipe's `keep_key` list applies to."""
        return {s.rebuilds_as for s in self.schemes if s.rebuilds_as}


FP32 = Scheme("fp32", 32, help="float32 weights and compute")
FP16 = Scheme("fp16", 16, help="float16 weights and compute")

BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("coreml", ".mlpackage", (
            FP32, FP16,
            Scheme("w8", 8, help="int8 per-channel linear weights, fp16 compute"),
            Scheme("pal8", 8, help="8-bit k-means palettized weights (grouped per-channel on iOS18)"),
            Scheme("pal6", 6, help="6-bit k-means palettized weights (grouped per-channel on iOS18)"),
            Scheme("pal4", 4, min_target="iOS18", help="4-bit palettized weights, grouped per-channel (iOS18)"),
            Scheme("auto", 4, static=True, min_target="iOS18", help="4-bit palettes (iOS18) with the layers that "
                   "need it at 8 bits, chosen by measured sensitivity to meet --min-cos/--min-agreement with the "
                   "smallest weights (writes a recipe reproducing the plan)", rebuilds_as="pal4"),
        ), runs_here=False, help="Core ML mlprogram for iPhone/iPad/Mac (Neural Engine)", keep_key="keep_8bit"),
        Backend("executorch-xnnpack", ".pte", (
            FP32,
            Scheme("w8a8", 8, static=True, help="static int8 activations, per-channel int8 weights"),
            Scheme("8da8w", 8, help="dynamic int8 activations, per-channel int8 linear weights"),
            Scheme("8da4w", 4, help="dynamic int8 activations, int4 linear weights in groups of 32"),
            Scheme("auto", 8, static=True, help="static int8 (w8a8), float layers chosen by measured sensitivity "
                   "and latency to meet --min-cos/--min-agreement (writes a recipe reproducing the plan)",
                   rebuilds_as="w8a8"),
            Scheme("auto-8da8w", 8, static=True, help="dynamic int8 (8da8w), float linears chosen by measured "
                   "sensitivity and latency to meet --min-cos/--min-agreement (writes a recipe reproducing the "
                   "plan; the photos score the plan)", rebuilds_as="8da8w"),
        ), runs_here=True, help="ExecuTorch with the XNNPACK delegate for Android/iOS CPUs", keep_key="keep_float"),
        Backend("executorch-coreml", ".pte", (FP32, FP16), runs_here=False,
                help="ExecuTorch with the Core ML delegate for iPhones"),
        Backend("onnx", ".onnx", (
            FP32, FP16,
            Scheme("8da8w", 8, help="dynamic int8 (ORT quantize_dynamic) of MatMul/Gemm; convs stay float"),
            Scheme("w8a8", 8, static=True, help="static int8 QDQ with calibration"),
            Scheme("auto", 8, static=True, help="static int8 QDQ, float layers chosen by measured sensitivity "
                   "and latency to meet --min-cos/--min-agreement (writes a recipe reproducing the plan)",
                   rebuilds_as="w8a8"),
        ), runs_here=True, help="one-file ONNX for ONNX Runtime (desktop, server, ORT Mobile)", keep_key="keep_float"),
    )
}

# `--format executorch` means the delegate most people want: XNNPACK on CPU.
ALIASES = {"executorch": "executorch-xnnpack", "pte": "executorch-xnnpack", "mlpackage": "coreml"}


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def get_backend(name: str) -> Backend:
    """Resolve a `--format` value (backend name or alias) or refuse with the list of formats."""
    key = ALIASES.get(name.lower(), name.lower())
    if key in BACKENDS:
        return BACKENDS[key]
    known = sorted([*BACKENDS, *ALIASES])
    raise UserError(f"unknown format {name!r}{_did_you_mean(name.lower(), known)}; "
                    f"choose from: {', '.join(sorted(BACKENDS))} (executorch = executorch-xnnpack)")


def resolve_pairs(formats: list[str], quants: list[str]) -> list[tuple[Backend, Scheme]]:
    """Turn `--format`/`--quant` values into (backend, scheme) pairs, refusing anything unsupported.

    A plain scheme applies to every requested format and must be supported by each; `FORMAT:SCHEME`
    applies to that format only (and adds it if it was not listed), so mixed requests stay expressible.
    """
    if not formats and not quants:
        raise UserError("nothing to export: give at least one --format and --quant (or a --recipe)")
    backends = [get_backend(f) for f in formats]
    pairs: list[tuple[Backend, Scheme]] = []
    plain = []
    for q in quants:
        if ":" in q:
            fmt, _, scheme = q.partition(":")
            backend = get_backend(fmt)
            pairs.append((backend, backend.scheme(scheme.strip().lower())))
        else:
            plain.append(q.strip().lower())
    if plain and not backends:
        raise UserError(f"--quant {plain[0]} needs a --format to apply to")
    if backends and not plain and not pairs:
        raise UserError("no --quant given; supported: " + "; ".join(
            f"{b.name}: {', '.join(b.scheme_names)}" for b in backends))
    for backend in backends:
        for q in plain:
            pairs.append((backend, backend.scheme(q)))
    unique: list[tuple[Backend, Scheme]] = []
    for pair in pairs:
        if pair not in unique:
            unique.append(pair)
    return unique


def parse_thresholds(values: dict[str, float] | None) -> dict[str, float]:
    """Merge user thresholds over the defaults: `fp32`, `fp16`, `8bit`, `4bit` set the minimum cosine,
    `CLASS.METRIC` another gate limit (e.g. `8bit.centered_cosine`); unknown classes and metrics are refused."""
    merged = dict(DEFAULT_THRESHOLDS)
    for key, value in (values or {}).items():
        cls = key.partition(".")[0]
        if cls not in DEFAULT_THRESHOLDS:
            raise UserError(f"unknown threshold class {cls!r}{_did_you_mean(cls, list(DEFAULT_THRESHOLDS))}; "
                            f"use one of {', '.join(DEFAULT_THRESHOLDS)}")
        problem = check_override(key, float(value))
        if problem:
            raise UserError(problem)
        merged[key] = float(value)
    return merged

"""The parity gate: does an artifact keep what retrieval depends on? (pure numpy; every runtime's check calls it)

A plain cosine to the reference cannot fail when the reference embeddings are nearly one constant vector (default
initialised weights: pairwise cosine >= 0.99999), nor see one GELU lowered as a ReLU (cosine 0.9999971 at fp32).
So the gate also measures the *differences between inputs*, which is all retrieval uses:

- ``min_cosine``: row-wise cosine to the reference, the worst input.
- ``centered_cosine``: the same after subtracting the reference's mean unit embedding over the parity inputs from
  both sides (worst input): how well the part of each embedding that tells inputs apart is kept. This decides.
  A check that runs only some parity inputs (Core AI's slow fp16 runtime) still centres on the mean over all of
  them (``population``): its rows are then exactly those rows of the full check, so it is never stricter or looser
  than the limits were set for. Centred on the few rows' own mean, two inputs measure their half-difference only:
  S2's image tower in Core AI fp16 measured 0.999463 on its first two photos and 0.999583 on all eight (worst of
  the 28 pairs 0.99916, best 0.99994).
- ``spread``: RMS distance of the reference's unit embeddings from their mean. Below ``SPREAD_FLOOR`` the inputs
  embed to nearly one vector: the centered metrics would judge rounding noise and any artifact that keeps the
  constant passes a cosine gate, so the verdict is "not assessable" (``passed`` None), never "passed".
- ``relative_error``: worst ||candidate - reference|| of unit embeddings divided by ``spread`` (reported).
- ``top1_agreement``: share of parity images whose top-1 parity prompt is unchanged (the other tower's fp32
  reference embeddings stand in for the other side), and ``rank_correlation``: Spearman correlation of the whole
  image-to-prompt similarity matrix with the reference's.
- ``max_abs_error`` and ``psnr_db`` (peak = max |reference|): at fp32 an exact export is limited only by float
  reordering (> 120 dB measured), so a PSNR floor there catches a changed operator the cosines round away.
"""

from __future__ import annotations

import math

import numpy as np

PRECISIONS = ("fp32", "fp16", "8bit", "4bit")
PSNR_CAP_DB = 200.0  # identical outputs have infinite PSNR; JSON cannot hold inf
# Below this spread a constant output has min cosine > 0.9987 (sqrt(1 - 0.05**2)) to every reference row, above the
# 8-bit and 4-bit cosine limits, and the inputs differ by less than ~20x fp16's rounding (1e-3 relative).
SPREAD_FLOOR = 0.05
ORDER = ("min_cosine", "psnr_db", "centered_cosine", "top1_agreement", "rank_correlation")
NEEDS_SPREAD = ("centered_cosine", "top1_agreement", "rank_correlation")

# Why each number (measured on MobileCLIP-S0 with the synthetic weights of models/synthetic.py, 8 parity inputs,
# ONNX Runtime; full table in benchmarks/results/zoo_parity.md):
# - min_cosine: the limits the toolkit always had (fp16 rounding costs ~1e-5 cosine, int8 ~1e-3, 4-bit ~1e-2).
# - psnr_db (fp32 only): clean fp32 exports measure 126-136 dB; 80 dB leaves 100x the error for other runtimes'
#   summation orders and deeper models. One GELU computed as ReLU measured 49 dB (image) and 35 dB (text).
# - centered_cosine: clean fp32 1.0000000, fp16 0.99998-0.99999 (limit 0.9995: 25x that loss), 8-bit 0.976-0.997
#   (limit 0.95: 2x the worst clean one). At fp32 the limit 0.9999 fails the swapped GELU (0.9972). The 4-bit
#   limit (0.85) is an extrapolation of the 8-bit ratio, not yet measured on a clean 4-bit export.
# - top1_agreement / rank_correlation: with 8 images and 8 prompts one flipped top-1 is 0.875; clean fp32 and fp16
#   keep every prediction (rank correlation >= 0.99995) and clean 8-bit exports measured 1.0 and >= 0.985, but
#   quantized schemes may flip near-ties of the synthetic weights, so those limits are loose: they catch an
#   artifact that reorders retrieval, and the centered cosine decides the rest. fp32 has neither: at the PSNR it
#   must reach, a changed top-1 or rank is a near-tie flipped by summation order (a 4-wide toy tower under
#   emulated ARM measured rank correlation 0.94 at 136 dB), not a defect; PSNR and centered cosine decide there.
DEFAULT_LIMITS: dict[str, dict[str, float]] = {
    "fp32": {"min_cosine": 0.99999, "psnr_db": 80.0, "centered_cosine": 0.9999},
    "fp16": {"min_cosine": 0.999, "centered_cosine": 0.9995, "top1_agreement": 0.875, "rank_correlation": 0.99},
    "8bit": {"min_cosine": 0.99, "centered_cosine": 0.95, "top1_agreement": 0.625, "rank_correlation": 0.9},
    "4bit": {"min_cosine": 0.98, "centered_cosine": 0.85, "top1_agreement": 0.5, "rank_correlation": 0.8},
}


def limits_for(precision: str, overrides: dict[str, float] | None = None) -> dict[str, float]:
    """The limits of one precision class with user overrides: `CLASS` (min cosine) or `CLASS.METRIC` keys."""
    if precision not in DEFAULT_LIMITS:
        raise ValueError(f"unknown precision class {precision!r}; use one of {', '.join(PRECISIONS)}")
    limits = dict(DEFAULT_LIMITS[precision])
    for key, value in (overrides or {}).items():
        cls, _, metric = key.partition(".")
        if cls == precision:
            limits[metric or "min_cosine"] = float(value)
    return limits


def check_override(key: str, value: float) -> str | None:
    """Why a `--threshold KEY=VALUE` is invalid, or None."""
    cls, _, metric = key.partition(".")
    if cls not in DEFAULT_LIMITS:
        return f"unknown threshold class {cls!r}; use one of {', '.join(PRECISIONS)}"
    if metric and metric not in ORDER:
        return f"unknown gate metric {metric!r}; use one of {', '.join(ORDER)}"
    if metric == "psnr_db":
        return None if value > 0 else f"threshold {key}={value} must be a PSNR in dB above 0"
    return None if 0.0 < value <= 1.0 else f"threshold {key}={value} must be in (0, 1]"


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x.ravel(), kind="stable"), kind="stable").astype(np.float64)


def spread(reference: np.ndarray) -> float:
    """RMS distance of the unit reference embeddings from their mean (0: every input embeds to one vector)."""
    unit = _unit(reference)
    return float(np.sqrt(((unit - unit.mean(axis=0)) ** 2).sum(axis=1).mean()))


def measure(reference: np.ndarray, candidate: np.ndarray, partner: np.ndarray | None = None,
            images_are_rows: bool = True, population: np.ndarray | None = None) -> dict[str, float]:
    """Every gate metric of N×D `candidate` outputs against the N×D `reference`.

    `partner`: M×D reference embeddings of the other tower (prompts for an image tower, images for a text tower);
    `images_are_rows` says which side is the image one, so agreement is always "each image's top-1 prompt".
    `population`: the reference outputs of every parity input when only the first N ran; the spread and the centre
    come from all of them.
    """
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    out = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    if ref.shape != out.shape:
        raise ValueError(f"output shape {out.shape} does not match the reference {ref.shape}")
    every = ref if population is None else np.asarray(population, dtype=np.float64).reshape(len(population), -1)
    if every.shape[1:] != ref.shape[1:] or not np.array_equal(every[:len(ref)], ref):
        raise ValueError("population must start with the reference rows")
    result: dict[str, float] = {"spread": round(spread(every), 6)}
    if not np.isfinite(out).all():
        return {**result, "min_cosine": -1.0, "centered_cosine": -1.0, "relative_error": math.inf,
                "max_abs_error": math.inf, "psnr_db": 0.0, "top1_agreement": 0.0, "rank_correlation": -1.0}
    mse = float(((ref - out) ** 2).mean())
    peak = float(np.abs(ref).max())
    psnr = PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10 * math.log10(max(peak, 1e-30) ** 2 / mse))
    u_ref, u_out = _unit(ref), _unit(out)
    mean = _unit(every).mean(axis=0)
    result.update({
        "min_cosine": float(_row_cosine(ref, out).min()),
        "centered_cosine": float(_row_cosine(u_ref - mean, u_out - mean).min()) if len(every) > 1 else math.nan,
        "relative_error": float(np.linalg.norm(u_out - u_ref, axis=1).max() / max(result["spread"], 1e-30)),
        "max_abs_error": float(np.abs(ref - out).max()), "psnr_db": round(psnr, 2)})
    if partner is not None:
        other = _unit(partner)
        sims_ref, sims_out = ((u_ref @ other.T, u_out @ other.T) if images_are_rows
                              else (other @ u_ref.T, other @ u_out.T))
        result["top1_agreement"] = float((sims_ref.argmax(axis=1) == sims_out.argmax(axis=1)).mean())
        result["rank_correlation"] = float(np.corrcoef(_ranks(sims_ref), _ranks(sims_out))[0, 1])
    return result


def _used(metric: str, value: float, limit: float) -> float:
    """Share of the limit's budget a value uses (> 1: failed). Cosine-like metrics have budget 1 - limit."""
    if math.isnan(value):
        return 0.0
    if metric == "psnr_db":
        return math.inf if value <= 0 else limit / value
    if limit >= 1.0:
        return math.inf if value < limit else 0.0
    return (1.0 - value) / (1.0 - limit)


def assess(reference: np.ndarray, candidate: np.ndarray, precision: str, partner: np.ndarray | None = None,
           images_are_rows: bool = True, overrides: dict[str, float] | None = None,
           population: np.ndarray | None = None) -> dict:
    """The gate's verdict: every metric, the limits, `decisive` (the metric nearest to or past its limit, or
    `spread` when not assessable), `passed` (True, False, or None: not assessable) and a one-line `message`."""
    metrics = measure(reference, candidate, partner, images_are_rows, population)
    limits = {k: v for k, v in limits_for(precision, overrides).items() if k in metrics}
    used = {k: _used(k, metrics[k], v) for k, v in limits.items()}
    assessable = metrics["spread"] >= SPREAD_FLOOR
    judged = [k for k in ORDER if k in used and (assessable or k not in NEEDS_SPREAD)]
    failed = [k for k in judged if used[k] > 1.0]
    if failed:  # the metric furthest past its limit decides; the others that failed are named too
        decisive = max(failed, key=lambda k: used[k])
        passed: bool | None = False
        others = [k for k in failed if k != decisive]
        message = (f"{decisive} {_fmt(decisive, metrics[decisive])} is below the {precision} limit "
                   f"{_fmt(decisive, limits[decisive])}" + (f" (also below: {', '.join(others)})" if others else ""))
    elif not assessable:
        decisive, passed = "spread", None
        message = (f"not assessable: the reference embeddings of the parity inputs have spread {metrics['spread']:.4f}"
                   f" < {SPREAD_FLOOR} (the inputs embed to nearly one vector, e.g. default-init weights), so only "
                   f"min_cosine/psnr were checked")
    else:
        decisive = max(judged, key=lambda k: used[k])
        passed = True
        message = f"passed: {decisive} {_fmt(decisive, metrics[decisive])} (limit {_fmt(decisive, limits[decisive])})"
    return {**metrics, "precision": precision, "limits": limits, "spread_floor": SPREAD_FLOOR,
            "decisive": decisive, "passed": passed, "message": message}


def _fmt(metric: str, value: float) -> str:
    if metric == "psnr_db":
        return f"{value:.1f} dB"
    return f"{value:.0%}" if metric == "top1_agreement" else f"{value:.6f}"

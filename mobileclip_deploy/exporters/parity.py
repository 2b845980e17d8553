"""Numbers that say whether an artifact computes what the folded PyTorch model computes."""

from __future__ import annotations

import math

import numpy as np

PSNR_CAP_DB = 200.0  # identical outputs have infinite PSNR; JSON cannot hold inf


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Minimum row-wise cosine, max abs error and PSNR (peak = max |reference|) of N×D embeddings."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    out = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    if ref.shape != out.shape:
        raise ValueError(f"output shape {out.shape} does not match the reference {ref.shape}")
    if not np.isfinite(out).all():
        return {"min_cosine": -1.0, "max_abs_error": math.inf, "psnr_db": 0.0}
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cosine = (ref * out).sum(axis=1) / np.maximum(denom, 1e-30)
    mse = float(((ref - out) ** 2).mean())
    peak = float(np.abs(ref).max())
    psnr = PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10 * math.log10(peak**2 / mse))
    return {"min_cosine": float(cosine.min()), "max_abs_error": float(np.abs(ref - out).max()),
            "psnr_db": round(psnr, 2)}


def top1_agreement(reference: np.ndarray, candidate: np.ndarray, class_embeddings: np.ndarray) -> float:
    """Share of images whose zero-shot top-1 class is the same with the candidate and the reference embeddings."""
    classes = class_embeddings / np.linalg.norm(class_embeddings, axis=1, keepdims=True)

    def top1(emb: np.ndarray) -> np.ndarray:
        emb = np.asarray(emb, dtype=np.float64)
        return (emb / np.linalg.norm(emb, axis=1, keepdims=True) @ classes.T).argmax(axis=1)

    return float((top1(reference) == top1(candidate)).mean())


def run_batched(run_one, inputs: np.ndarray) -> np.ndarray:
    """Run a fixed-batch-1 artifact over every row of `inputs` and stack the outputs."""
    return np.concatenate([np.asarray(run_one(inputs[i : i + 1]), dtype=np.float32) for i in range(len(inputs))])

"""Numbers that say whether an artifact computes what the folded PyTorch model computes."""

from __future__ import annotations

import numpy as np

from mobileclip_deploy.verify.gate import measure


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Minimum row-wise cosine, max abs error and PSNR (peak = max |reference|) of N×D embeddings (the gate's
    measures, verify/gate.py; the gate's verdict adds the metrics on the differences between inputs)."""
    metrics = measure(reference, candidate)
    return {k: metrics[k] for k in ("min_cosine", "max_abs_error", "psnr_db")}


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

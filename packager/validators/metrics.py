"""Comparison metrics: pure numpy, no models, no I/O."""

from __future__ import annotations

import numpy as np


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b``. Two zero rows count as
    identical (1.0); one zero row against a non-zero row as unrelated (0.0)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.einsum("ij,ij->i", a, b) / (norm_a * norm_b)  # NaN stays NaN: the gate must see it
    zero = (norm_a == 0) | (norm_b == 0)
    return np.where(zero, np.where((norm_a == 0) & (norm_b == 0), 1.0, 0.0), cosine)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0


def cosine_matrix(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norms > 0, norms, 1.0)
    return unit @ unit.T


def neighbour_agreement(reference: np.ndarray, candidate: np.ndarray, *, k: int = 1, tolerance: float = 1e-6) -> float:
    """Mean share of each text's k nearest neighbours (by cosine, itself excluded) under the
    candidate that are also among its k nearest under the reference.

    Ties make "the" nearest neighbour ambiguous (texts truncated to the same tokens embed
    identically), so a candidate neighbour counts when its reference similarity is within
    ``tolerance`` of the reference's k-th best.
    """
    n = len(reference)
    if n < 2:
        return 1.0
    k = min(k, n - 1)
    ref_sim = cosine_matrix(reference)
    cand_sim = cosine_matrix(candidate)
    np.fill_diagonal(ref_sim, -np.inf)
    np.fill_diagonal(cand_sim, -np.inf)
    kth_best = -np.sort(-ref_sim, axis=1)[:, k - 1]
    cand_top = np.argsort(-cand_sim, axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(ref_sim, cand_top, axis=1) >= (kth_best - tolerance)[:, None]
    return float(hits.sum() / (n * k))

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


def relative_max_diff(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Largest absolute difference, relative to the reference's scale (at least 1)."""
    reference = np.asarray(reference, np.float64)
    scale = max(1.0, float(np.max(np.abs(reference)))) if reference.size else 1.0
    return max_abs_diff(reference, candidate) / scale


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing their average rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values[np.diff(np.sort(values), prepend=np.nan) == 0]):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Spearman rank correlation; 1.0 when both are constant (the same order, trivially)."""
    a, b = average_ranks(reference), average_ranks(candidate)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    if denominator == 0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float((a * b).sum() / denominator)


def top_k_overlap(reference: np.ndarray, candidate: np.ndarray, *, k: int = 10) -> np.ndarray:
    """Per row: the share of the reference's k largest non-zero dimensions that are also among
    the candidate's k largest (rows with no non-zeros count as 1)."""
    overlaps = []
    for ref, cand in zip(np.asarray(reference), np.asarray(candidate), strict=True):
        n = min(k, int(np.count_nonzero(ref)))
        if n == 0:
            overlaps.append(1.0)
            continue
        top_ref = set(np.argsort(-ref, kind="stable")[:n].tolist())
        top_cand = set(np.argsort(-cand, kind="stable")[:n].tolist())
        overlaps.append(len(top_ref & top_cand) / n)
    return np.array(overlaps)

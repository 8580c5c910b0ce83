"""Comparison metrics: pure numpy, no models, no I/O. First the measures (cosine, differences,
neighbours, ranks), then the metrics each chain kind's gate reads, computed from a batch of
reference and candidate outputs (``dense_metrics``, ``sparse_metrics``, ``logit_metrics``,
``score_metrics``): the parity gate and the int8 search both use them."""

from __future__ import annotations

import numpy as np

TOP_K = 10  # active tokens compared between sparse vectors


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


# MaxSim top-1 agreement: the candidate's best document counts as the reference's best when the
# reference scores it within this share of the query's best-to-median spread. MaxSim rankings
# have clusters of near-equal documents (measured on a ColBERT-shaped MiniLM: every int8 miss was
# within 6.5 % of the spread); reordering inside one is not what retrieval notices.
TOP1_TIE_SHARE = 0.01


def score_metrics(ref: np.ndarray, cand: np.ndarray, compared: np.ndarray) -> dict[str, float]:
    """A score matrix (queries x documents), on the cells ``compared`` marks: their difference,
    and each query's ranking of its documents (queries with fewer than two skipped): Spearman,
    and top-1 agreement up to ties (TOP1_TIE_SHARE)."""
    rows = [(r[keep], c[keep]) for r, c, keep in zip(ref, cand, compared, strict=True) if keep.sum() > 1]
    if not rows:
        return {"score_rel_diff": 0.0, "score_spearman_min": 1.0, "score_spearman_mean": 1.0, "top1_agreement": 1.0}
    rank = [spearman(r, c) for r, c in rows]
    return {"score_rel_diff": relative_max_diff(ref[compared], cand[compared]),
            "score_spearman_min": float(np.min(rank)), "score_spearman_mean": float(np.mean(rank)),
            "top1_agreement": float(np.mean([_top1_agrees(r, c, spread=TOP1_TIE_SHARE) for r, c in rows]))}


def dense_metrics(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    """Per-text cosine, scale and neighbourhoods of two batches of dense embeddings."""
    cosine = row_cosine(ref, cand)
    return {"min_cosine": float(np.min(cosine)), "mean_cosine": float(np.mean(cosine)),
            "max_abs_diff": max_abs_diff(ref, cand), "max_rel_diff": relative_max_diff(ref, cand),
            "neighbour_agreement": neighbour_agreement(ref, cand, k=1),
            "neighbour_agreement_10": neighbour_agreement(ref, cand, k=10)}


def sparse_metrics(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    """Full-vector cosine, active tokens, and the dot scores that retrieval ranks by."""
    cosine = row_cosine(ref, cand)
    nnz_ref, nnz_cand = np.count_nonzero(ref, axis=1), np.count_nonzero(cand, axis=1)
    overlap = top_k_overlap(ref, cand, k=TOP_K)
    ref_dots, cand_dots = ref @ ref.T, cand @ cand.T
    return {"min_cosine": float(np.min(cosine)), "mean_cosine": float(np.mean(cosine)),
            "max_abs_diff": max_abs_diff(ref, cand), "max_rel_diff": relative_max_diff(ref, cand),
            "dot_rel_diff": relative_max_diff(ref_dots, cand_dots),
            "dot_spearman_mean": float(np.mean([spearman(r, c) for r, c in zip(ref_dots, cand_dots, strict=True)])),
            f"top{TOP_K}_overlap_min": float(overlap.min()), f"top{TOP_K}_overlap_mean": float(overlap.mean()),
            "nnz_mean": float(nnz_ref.mean()), "nnz_mean_abs_diff": float(np.abs(nnz_ref - nnz_cand).mean())}


def logit_metrics(ref: np.ndarray, cand: np.ndarray, query_groups: list[np.ndarray]) -> dict[str, float]:
    """Cross-encoder logits: their difference, and each query's ranking of its documents (per label)."""
    ref, cand = ref.reshape(len(ref), -1), cand.reshape(len(cand), -1)
    rankings = [(g, label) for g in query_groups for label in range(ref.shape[1])]
    metrics = {"logit_rel_diff": relative_max_diff(ref, cand),
               "spearman_min": min(spearman(ref[g, label], cand[g, label]) for g, label in rankings),
               "top1_agreement": float(np.mean([_top1_agrees(ref[g, label], cand[g, label]) for g, label in rankings]))}
    if ref.shape[1] > 1:  # the predicted label of each pair
        metrics["label_agreement"] = float(np.mean([_top1_agrees(r, c) for r, c in zip(ref, cand, strict=True)]))
    return metrics


def groups(pairs: list[tuple[str, str]]) -> list[np.ndarray]:
    """Indices of the pairs sharing each query, in first-seen order."""
    by_query: dict[str, list[int]] = {}
    for i, (query, _) in enumerate(pairs):
        by_query.setdefault(query, []).append(i)
    return [np.array(indices) for indices in by_query.values()]


def _top1_agrees(ref: np.ndarray, cand: np.ndarray, tolerance: float = 1e-6, spread: float = 0.0) -> bool:
    """The candidate's best is (within rounding) also the reference's best: exact ties in the
    reference may resolve either way, and with ``spread`` so may near-ties within that share of
    the reference's best-to-median spread."""
    slack = max(tolerance * max(1.0, float(np.abs(ref).max())), spread * float(ref.max() - np.median(ref)))
    return bool(ref[int(np.argmax(cand))] >= ref.max() - slack)

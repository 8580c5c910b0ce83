"""The gates: what each chain kind's parity measures (the metric names a gate may use), the
default thresholds per chain kind and precision, and a build's gate with the user's overrides."""

from __future__ import annotations

from packager.errors import UsageError
from packager.runtime.enums import ChainKind, Precision
from packager.validators.metrics import TOP_K
from packager.validators.report import Gate

METRICS: dict[ChainKind, frozenset[str]] = {
    ChainKind.SENTENCE_TRANSFORMER: frozenset({"min_cosine", "mean_cosine", "max_abs_diff", "max_rel_diff",
                                               "neighbour_agreement", "neighbour_agreement_10", "token_min_cosine"}),
    ChainKind.SPARSE_ENCODER: frozenset({"min_cosine", "mean_cosine", "max_abs_diff", "max_rel_diff", "dot_rel_diff",
                                         "dot_spearman_mean", f"top{TOP_K}_overlap_min", f"top{TOP_K}_overlap_mean",
                                         "nnz_mean", "nnz_mean_abs_diff"}),
    ChainKind.CROSS_ENCODER: frozenset({"max_abs_diff", "score_rel_diff", "logit_rel_diff", "spearman_min",
                                        "top1_agreement", "label_agreement"}),
    ChainKind.MULTI_VECTOR_ENCODER: frozenset({"token_min_cosine", "token_mean_cosine", "max_abs_diff", "tokens_mean",
                                               "score_rel_diff", "score_spearman_min", "score_spearman_mean",
                                               "top1_agreement"}),
}
DEFAULT_GATES: dict[tuple[ChainKind, Precision], Gate] = {
    # fp32 must reproduce the reference up to float rounding: a real mismatch fails.
    (ChainKind.SENTENCE_TRANSFORMER, Precision.FP32): {"min_cosine": 0.99999, "max_rel_diff": 1e-4},
    (ChainKind.SPARSE_ENCODER, Precision.FP32): {"min_cosine": 0.99999, "max_rel_diff": 1e-4, "dot_rel_diff": 1e-4},
    (ChainKind.CROSS_ENCODER, Precision.FP32): {"logit_rel_diff": 1e-4, "score_rel_diff": 1e-4, "spearman_min": 0.99},
    (ChainKind.MULTI_VECTOR_ENCODER, Precision.FP32): {"token_min_cosine": 0.99999, "score_rel_diff": 1e-4},
    # fp16 weights: rounding at the fourth significant digit.
    (ChainKind.SENTENCE_TRANSFORMER, Precision.FP16): {"min_cosine": 0.999, "mean_cosine": 0.9999,
                                                       "neighbour_agreement_10": 0.95},
    (ChainKind.SPARSE_ENCODER, Precision.FP16): {"min_cosine": 0.999, "top10_overlap_mean": 0.95,
                                                 "dot_spearman_mean": 0.99},
    (ChainKind.CROSS_ENCODER, Precision.FP16): {"spearman_min": 0.99, "top1_agreement": 0.98},
    (ChainKind.MULTI_VECTOR_ENCODER, Precision.FP16): {"token_min_cosine": 0.999, "token_mean_cosine": 0.9999,
                                                       "score_spearman_min": 0.99},
    # int8: what retrieval and reranking notice, not float rounding.
    (ChainKind.SENTENCE_TRANSFORMER, Precision.INT8): {"mean_cosine": 0.995, "min_cosine": 0.98,
                                                       "neighbour_agreement_10": 0.9},
    (ChainKind.SPARSE_ENCODER, Precision.INT8): {"top10_overlap_mean": 0.9, "dot_spearman_mean": 0.98},
    (ChainKind.CROSS_ENCODER, Precision.INT8): {"spearman_min": 0.98, "top1_agreement": 0.95},
    (ChainKind.MULTI_VECTOR_ENCODER, Precision.INT8): {"token_mean_cosine": 0.99, "score_spearman_mean": 0.98,
                                                       "top1_agreement": 0.95},
}
# bf16 products (an 8-bit significand) summed in f32: fp16's gates with min cosines of 0.995. On
# 1000 real sentences all-mpnet-base-v2 in bf16 had a min cosine of 0.99835 to fp32 (mean 0.99996),
# OpenVINO's own bf16 of it the same (docs/benchmarks.md): fp16's 0.999 would refuse what bf16
# arithmetic gives on some texts, whether or not the gate's inputs hold one.
BF16_MIN_COSINE = 0.995
DEFAULT_GATES.update({
    (kind, Precision.BF16): {metric: BF16_MIN_COSINE if metric in ("min_cosine", "token_min_cosine") else threshold
                             for metric, threshold in gate.items()}
    for (kind, precision), gate in list(DEFAULT_GATES.items()) if precision is Precision.FP16})


def resolve_gate(kind: ChainKind, precision: Precision, overrides: dict[tuple[Precision, str], float], *,
                 token_embeddings: bool = False) -> Gate:
    """The default gate of ``kind`` at ``precision`` with the user's ``--gate`` overrides (every
    override's metric must exist for ``kind``), plus the per-token check when token embeddings
    are exported (at the sentence embedding's min_cosine, unless overridden)."""
    if token_embeddings and kind is not ChainKind.SENTENCE_TRANSFORMER:
        raise UsageError(f"--token-embeddings exports a SentenceTransformer's per-token output; a {kind.value} has "
                         "no such output to add (a MultiVectorEncoder's encode returns its token embeddings already)")
    gate = dict(DEFAULT_GATES[(kind, precision)])
    known = METRICS[kind]
    for (for_precision, metric), threshold in overrides.items():
        if metric not in known:
            raise UsageError(f"--gate {for_precision.value}.{metric}: {kind.value} parity has no metric {metric!r}; "
                             f"it has: {', '.join(sorted(known))}")
        if for_precision is precision:
            gate[metric] = threshold
    if token_embeddings and "token_min_cosine" not in gate:
        gate["token_min_cosine"] = gate.get("min_cosine", DEFAULT_GATES[(kind, Precision.FP32)]["min_cosine"])
    return gate

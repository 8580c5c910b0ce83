"""Run the reference and the candidate end to end (text in, embedding out) and gate the result.

The reference is sentence-transformers running the saved chain in torch; the candidate is the
artifact's own loader, tokenizer included. Nothing is shared between the two sides but the texts.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from packager.validators.metrics import max_abs_diff, neighbour_agreement, row_cosine
from packager.validators.report import Check, Gate, ParityReport, texts_digest

log = logging.getLogger(__name__)
BATCH_SIZE = 32


def check_parity(reference: Any, candidate: Any, texts: list[str], gate: Gate, *, route: str = "default",
                 token_embeddings: bool = False) -> ParityReport:
    """Encode ``texts`` with both models and compare sentence (and optionally token) embeddings."""
    log.info("parity: encoding %d texts with the torch reference and the artifact's loader", len(texts))
    ref = np.asarray(reference.encode(texts, batch_size=BATCH_SIZE, convert_to_numpy=True, show_progress_bar=False))
    cand = np.asarray(candidate.encode(texts, batch_size=BATCH_SIZE))
    problems = _shape_problems("sentence_embedding", ref, cand)
    metrics: dict[str, float] = {}
    worst: tuple[dict, ...] = ()
    if not problems:
        cosine = row_cosine(ref, cand)
        metrics = {
            "min_cosine": float(np.min(cosine)),
            "mean_cosine": float(np.mean(cosine)),
            "max_abs_diff": max_abs_diff(ref, cand),
            "neighbour_agreement": neighbour_agreement(ref, cand, k=1),
        }
        worst = tuple({"text": texts[i][:200], "cosine": float(cosine[i])} for i in np.argsort(cosine)[:3])
    if token_embeddings and not problems:
        metrics["token_min_cosine"] = _token_min_cosine(reference, candidate, texts, problems)
    checks = tuple(Check(metric, metrics.get(metric, float("nan")), threshold)
                   for metric, threshold in _gated(gate, token_embeddings).items())
    return ParityReport(route=route, texts=len(texts), texts_sha256=texts_digest(texts), metrics=metrics,
                        checks=checks, problems=tuple(problems), worst=worst)


def _gated(gate: Gate, token_embeddings: bool) -> dict[str, float]:
    gated = gate.as_dict()
    if token_embeddings:
        gated["token_min_cosine"] = gate.min_cosine
    return gated


def _shape_problems(name: str, ref: np.ndarray, cand: np.ndarray) -> list[str]:
    if ref.shape != cand.shape:
        return [f"{name}: candidate shape {cand.shape} != reference shape {ref.shape}"]
    if not np.all(np.isfinite(cand)):
        return [f"{name}: candidate has non-finite values"]
    return []


def _token_min_cosine(reference: Any, candidate: Any, texts: list[str], problems: list[str]) -> float:
    ref = reference.encode(texts, batch_size=BATCH_SIZE, output_value="token_embeddings", show_progress_bar=False)
    cand = candidate.encode(texts, batch_size=BATCH_SIZE, output_value="token_embeddings")
    worst = 1.0
    for i, (r, c) in enumerate(zip(ref, cand)):
        r = r.detach().cpu().numpy() if hasattr(r, "detach") else np.asarray(r)
        found = _shape_problems(f"token_embeddings[{i}]", r, np.asarray(c))
        if found:
            problems.extend(found)
            continue
        worst = min(worst, float(np.min(row_cosine(r, c))))
    return worst

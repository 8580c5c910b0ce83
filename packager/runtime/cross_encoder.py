"""A CrossEncoder chain: scores for (query, document) pairs with ``predict`` and ``rank``, after
the activation the model declares."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .enums import Activation, OutputMeaning
from .errors import ArtifactIntegrityError, InvalidInputError, UnsupportedVerbError
from .inputs import as_pairs, as_texts, check_positive
from .manifest import Manifest, ScoringSpec
from .model import Model, Unsupported


class CrossEncoderModel(Model):
    """A CrossEncoder chain: scores for (query, document) pairs."""

    verbs = ("predict", "rank")
    encode, encode_query, encode_document = Unsupported(), Unsupported(), Unsupported()
    similarity, decode = Unsupported(), Unsupported()

    def __init__(self, root: Path, manifest: Manifest, *, threads: int | None = None,
                 float_products: bool = False) -> None:
        super().__init__(root, manifest, threads=threads, float_products=float_products)
        if manifest.scoring is None:  # Manifest refuses this already; the type says it may be None
            raise ArtifactIntegrityError("manifest: a CrossEncoder needs its scoring settings")
        self._scoring: ScoringSpec = manifest.scoring

    def predict(self, inputs: tuple[str, str] | Iterable[tuple[str, str]], *, batch_size: int = 32,
                activation_fn: Callable[[np.ndarray], np.ndarray] | None = None, apply_softmax: bool = False,
                prompt_name: str | None = None, prompt: str | None = None) -> np.ndarray | np.floating:
        """Scores as ``CrossEncoder.predict`` computes them: the model's activation (or
        ``activation_fn``, a numpy function) on the logits, ``[n]`` for one label, ``[n, labels]``
        otherwise, a scalar (or one row) for a single pair."""
        pairs, single = as_pairs(inputs)
        if activation_fn is not None and not callable(activation_fn):
            raise InvalidInputError(f"activation_fn must be a function of a numpy array, got "
                                    f"{type(activation_fn).__name__}")
        scoring = self._scoring
        rows = self._run("predict", list(pairs), OutputMeaning.SCORES, prompt_name=prompt_name, prompt=prompt,
                         batch_size=batch_size)
        scores = np.stack(rows) if rows else np.empty((0, scoring.num_labels), np.float32)
        scores = (activation_fn or ACTIVATIONS[scoring.activation])(scores)
        if scoring.num_labels == 1:
            scores = scores[:, 0]
        elif apply_softmax:
            scores = ACTIVATIONS[Activation.SOFTMAX](scores)
        return scores[0] if single else scores

    def rank(self, query: str, documents: list[str], *, top_k: int | None = None, return_documents: bool = False,
             batch_size: int = 32, activation_fn: Callable[[np.ndarray], np.ndarray] | None = None,
             prompt_name: str | None = None, prompt: str | None = None) -> list[dict[str, Any]]:
        """Documents by descending score: ``[{"corpus_id", "score"(, "text")}]``, as ``CrossEncoder.rank``."""
        if self._scoring.num_labels != 1:
            raise UnsupportedVerbError("rank() needs a model with one label; use predict() with pairs instead")
        if not isinstance(query, str):
            raise InvalidInputError(f"rank takes a string query, got {type(query).__name__}")
        check_positive(top_k, "top_k", optional=True)
        documents, _ = as_texts(documents)
        scores = np.atleast_1d(self.predict([(query, d) for d in documents], batch_size=batch_size,
                                            activation_fn=activation_fn, prompt_name=prompt_name, prompt=prompt)
                               if documents else np.empty(0, np.float32))
        results = [{"corpus_id": i, "score": float(s)} | ({"text": documents[i]} if return_documents else {})
                   for i, s in enumerate(scores)]
        return sorted(results, key=lambda r: r["score"], reverse=True)[:top_k]


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    probabilities: np.ndarray = shifted / shifted.sum(axis=-1, keepdims=True)
    return probabilities


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp overflows to inf for very negative logits: the result is 0, as it should be
        probabilities: np.ndarray = (1.0 / (1.0 + np.exp(-x))).astype(x.dtype)
        return probabilities


ACTIVATIONS: dict[Activation, Callable[[np.ndarray], np.ndarray]] = {
    Activation.IDENTITY: lambda x: x,
    Activation.SIGMOID: _sigmoid,
    Activation.SOFTMAX: _softmax,
    Activation.TANH: np.tanh,
}

"""sentence-transformers' similarity functions in numpy: cosine, dot, and negated euclidean and
manhattan distance, over dense rows or sparse embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidInputError
from .manifest import Similarity
from .sparse import SparseBatch, SparseEmbedding


def similarity(function: Similarity, a: Any, b: Any) -> np.ndarray:
    """``[len(a), len(b)]`` scores with ``function``."""
    a, b = _matrix(a), _matrix(b)
    if a.shape[1] != b.shape[1]:
        raise InvalidInputError(f"embeddings of different dimensions: {a.shape[1]} and {b.shape[1]}")
    if function is Similarity.COSINE:
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    if function in (Similarity.COSINE, Similarity.DOT):
        return a @ b.T
    if function is Similarity.EUCLIDEAN:  # |a - b|^2 = |a|^2 + |b|^2 - 2ab, without an n*m*d array
        squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * (a @ b.T)
        return -np.sqrt(np.maximum(squared, 0))
    return -np.stack([np.abs(row - b).sum(axis=1) for row in a]) if len(a) else np.zeros((0, len(b)), np.float32)


def _matrix(embeddings: Any) -> np.ndarray:
    if isinstance(embeddings, (SparseBatch, SparseEmbedding)):
        embeddings = embeddings.toarray()
    if isinstance(embeddings, (str, bytes)):
        raise InvalidInputError("similarity takes embeddings (what encode returned), not text; encode the texts first")
    try:
        array = np.asarray(embeddings, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"similarity takes embeddings (arrays of numbers), got {type(embeddings).__name__}: "
                                f"{e}") from None
    if array.ndim not in (1, 2):
        raise InvalidInputError(f"similarity takes one embedding or a batch, got an array of shape {array.shape}")
    return array[None, :] if array.ndim == 1 else array

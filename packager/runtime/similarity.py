"""sentence-transformers' similarity functions in numpy: cosine, dot, and negated euclidean and
manhattan distance, over dense rows or sparse embeddings; MaxSim over multi-vector embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np

from .enums import Similarity
from .errors import InvalidInputError
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
        products: np.ndarray = a @ b.T
        return products
    if function is Similarity.EUCLIDEAN:  # |a - b|^2 = |a|^2 + |b|^2 - 2ab, without an n*m*d array
        squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * (a @ b.T)
        distances: np.ndarray = -np.sqrt(np.maximum(squared, 0))
        return distances
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


# The score of a document without tokens (all masked, or none): below every real one, as in
# sentence-transformers' maxsim.
EMPTY_DOCUMENT_SCORE = -1e9


def maxsim(queries: Any, documents: Any, *, mean: bool = False) -> np.ndarray:
    """Late interaction, ``[len(queries), len(documents)]``: for each query token the largest dot
    product with any token of the document, summed over the query's tokens (with ``mean``,
    divided by their count). Each side is a list of ``[tokens, dim]`` arrays, or one such array."""
    a, b = _token_matrices(queries, "queries"), _token_matrices(documents, "documents")
    _same_dimension(a, b)
    scores = np.zeros((len(a), len(b)), np.float32)
    filled = [i for i, query in enumerate(a) if len(query)]  # a query without tokens scores 0
    tokens = np.concatenate([a[i] for i in filled]) if filled else None
    starts = np.cumsum([0] + [len(a[i]) for i in filled[:-1]])
    for j, document in enumerate(b):
        if not len(document):
            scores[:, j] = EMPTY_DOCUMENT_SCORE
        elif tokens is not None:  # every query token against the document at once, summed per query
            scores[filled, j] = np.add.reduceat((tokens @ document.T).max(axis=1), starts)
    return scores / _token_counts(a)[:, None] if mean else scores


def maxsim_pairwise(queries: Any, documents: Any, *, mean: bool = False) -> np.ndarray:
    """``[n]``: the MaxSim of ``queries[i]`` against ``documents[i]``."""
    a, b = _token_matrices(queries, "queries"), _token_matrices(documents, "documents")
    if len(a) != len(b):
        raise InvalidInputError(f"similarity_pairwise takes as many queries as documents, got {len(a)} and {len(b)}")
    _same_dimension(a, b)
    scores = np.array([_pair(q, d) for q, d in zip(a, b, strict=True)], np.float32).reshape(len(a))
    return scores / _token_counts(a) if mean else scores


def _pair(query: np.ndarray, document: np.ndarray) -> float:
    """One query against one document, both already checked."""
    if not len(document):
        return EMPTY_DOCUMENT_SCORE
    return float((query @ document.T).max(axis=1).sum(dtype=np.float32)) if len(query) else 0.0


def _token_counts(matrices: list[np.ndarray]) -> np.ndarray:
    return np.array([max(len(m), 1) for m in matrices], np.float32)


def _same_dimension(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    dimensions = {m.shape[1] for m in a + b if len(m)}
    if len(dimensions) > 1:
        raise InvalidInputError(f"token embeddings of different dimensions: {sorted(dimensions)}")


def _token_matrices(embeddings: Any, what: str) -> list[np.ndarray]:
    """A list of ``[tokens, dim]`` float32 arrays: what encode returned for several texts (a list),
    or for one (an array); or, as sentence-transformers takes it, a padded ``[n, tokens, dim]``
    array whose all-zero rows are padding."""
    if isinstance(embeddings, (str, bytes)):
        raise InvalidInputError(f"{what}: similarity takes token embeddings (what encode returned), not text")
    if isinstance(embeddings, np.ndarray) and embeddings.ndim == 3:
        return [m[np.any(m != 0, axis=1)].astype(np.float32) for m in embeddings]
    if isinstance(embeddings, np.ndarray) and embeddings.ndim != 2:
        raise InvalidInputError(f"{what}: pass what encode returned (a list of [tokens, dim] arrays, or one), not an "
                                f"array of shape {embeddings.shape}")
    if not isinstance(embeddings, (np.ndarray, list, tuple)):
        raise InvalidInputError(f"{what}: similarity takes what encode returned (a list of [tokens, dim] arrays, or "
                                f"one), got {type(embeddings).__name__}")
    items = [embeddings] if isinstance(embeddings, np.ndarray) else list(embeddings)
    matrices = []
    for i, item in enumerate(items):
        try:
            matrix = np.asarray(item, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"{what}[{i}]: not an array of numbers ({e})") from None
        if matrix.ndim != 2:
            raise InvalidInputError(f"{what}[{i}]: a [tokens, dim] array is expected, got shape {matrix.shape}")
        matrices.append(matrix)
    return matrices

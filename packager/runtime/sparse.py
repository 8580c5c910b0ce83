"""Sparse embeddings as the loader returns them: per text the active dimensions and their weights
(as fastembed's SparseEmbedding), a batch that converts to a dense array."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np


@dataclass(frozen=True)
class SparseEmbedding:
    indices: np.ndarray  # int64, ascending
    values: np.ndarray  # float32, non-zero
    dimension: int

    @classmethod
    def from_dense(cls, row: np.ndarray, max_active_dims: int | None = None) -> SparseEmbedding:
        """Keep the non-zeros, or only the ``max_active_dims`` largest by magnitude, as
        sentence-transformers' ``max_active_dims`` does."""
        row = np.asarray(row, dtype=np.float32)
        if max_active_dims is not None and max_active_dims < row.size:
            keep = np.argpartition(-np.abs(row), max_active_dims - 1)[:max_active_dims]
            trimmed = np.zeros_like(row)
            trimmed[keep] = row[keep]
            row = trimmed
        indices = np.flatnonzero(row)
        return cls(indices=indices.astype(np.int64), values=row[indices], dimension=row.size)

    def toarray(self) -> np.ndarray:
        dense = np.zeros(self.dimension, dtype=np.float32)
        dense[self.indices] = self.values
        return dense

    def __len__(self) -> int:
        return len(self.indices)


class SparseBatch(Sequence[SparseEmbedding]):
    """The sparse embeddings of several texts, in input order."""

    def __init__(self, embeddings: list[SparseEmbedding], dimension: int) -> None:
        self._embeddings = embeddings
        self.dimension = dimension

    @overload
    def __getitem__(self, index: int) -> SparseEmbedding: ...

    @overload
    def __getitem__(self, index: slice) -> list[SparseEmbedding]: ...

    def __getitem__(self, index: int | slice) -> SparseEmbedding | list[SparseEmbedding]:
        return self._embeddings[index]

    def __len__(self) -> int:
        return len(self._embeddings)

    def toarray(self) -> np.ndarray:
        dense = np.zeros((len(self), self.dimension), dtype=np.float32)
        for row, embedding in enumerate(self._embeddings):
            dense[row, embedding.indices] = embedding.values
        return dense

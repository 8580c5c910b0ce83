"""A SparseEncoder chain (SPLADE, static token weights, a sparse autoencoder, or a Router of
them): sparse embeddings as indices and values, ``similarity`` and ``decode``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .enums import OutputMeaning, Similarity
from .errors import ArtifactIntegrityError, InvalidInputError
from .inputs import check_positive
from .manifest import Manifest, SparseSpec
from .model import Model, Unsupported
from .similarity import similarity
from .sparse import SparseBatch, SparseEmbedding


class SparseEncoderModel(Model):
    """A SparseEncoder chain (SPLADE, static token weights, sparse autoencoder, or a Router of them)."""

    verbs = ("encode", "encode_query", "encode_document", "similarity", "decode")
    predict, rank = Unsupported(), Unsupported()

    def __init__(self, root: Path, manifest: Manifest, *, threads: int | None = None,
                 float_products: bool = False) -> None:
        super().__init__(root, manifest, threads=threads, float_products=float_products)
        if manifest.sparse is None:  # Manifest refuses this already; the type says it may be None
            raise ArtifactIntegrityError("manifest: a SparseEncoder needs its sparse settings")
        self._sparse: SparseSpec = manifest.sparse
        self._similarity = manifest.similarity or Similarity.DOT
        self._dimension = int(manifest.embedding_dimension or 0)

    def encode(self, inputs: str | Iterable[str], *, prompt_name: str | None = None, prompt: str | None = None,
               batch_size: int = 32, max_active_dims: int | None = None) -> SparseEmbedding | SparseBatch:
        """Sparse embeddings (indices and values per text) as ``SparseEncoder.encode`` computes them;
        ``max_active_dims`` overrides the model's own limit."""
        return self._encode("encode", inputs, prompt_name, prompt, batch_size, max_active_dims)

    def encode_query(self, inputs: str | Iterable[str], *, prompt_name: str | None = None, prompt: str | None = None,
                     batch_size: int = 32, max_active_dims: int | None = None) -> SparseEmbedding | SparseBatch:
        return self._encode("encode_query", inputs, prompt_name, prompt, batch_size, max_active_dims)

    def encode_document(self, inputs: str | Iterable[str], *, prompt_name: str | None = None,
                        prompt: str | None = None, batch_size: int = 32,
                        max_active_dims: int | None = None) -> SparseEmbedding | SparseBatch:
        return self._encode("encode_document", inputs, prompt_name, prompt, batch_size, max_active_dims)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        return similarity(self._similarity, embeddings1, embeddings2)

    def decode(self, embeddings: SparseEmbedding | SparseBatch, top_k: int | None = None) -> list[Any]:
        """``(token, weight)`` pairs by descending weight, per text (a list of lists for a batch)."""
        check_positive(top_k, "top_k", optional=True)
        if isinstance(embeddings, SparseBatch):
            return [self.decode(e, top_k) for e in embeddings]
        if not isinstance(embeddings, SparseEmbedding):
            raise InvalidInputError(f"decode takes what encode returned, got {type(embeddings).__name__}")
        order = np.argsort(-embeddings.values, kind="stable")[:top_k]
        vocabulary = self._sparse.vocabulary
        runner = next((r for r in self._runners.values() if r.spec.text.file == vocabulary), None)
        name = runner.text.id_to_token if runner else str
        return [(name(int(embeddings.indices[i])), float(embeddings.values[i])) for i in order]

    def _encode(self, verb: str, inputs: Any, prompt_name: str | None, prompt: str | None, batch_size: int,
                max_active_dims: int | None) -> SparseEmbedding | SparseBatch:
        check_positive(max_active_dims, "max_active_dims", optional=True)
        sparse = self._sparse
        if max_active_dims is not None and sparse.max_active_dims_ceiling is not None \
                and max_active_dims > sparse.max_active_dims_ceiling:
            raise InvalidInputError(f"max_active_dims={max_active_dims} exceeds what this model computes: its sparse "
                                    f"autoencoder keeps {sparse.max_active_dims_ceiling} dimensions")
        limit = max_active_dims if max_active_dims is not None else sparse.max_active_dims
        rows, single = self._embed(inputs, verb, OutputMeaning.SPARSE_EMBEDDING, prompt_name=prompt_name,
                                   prompt=prompt, batch_size=batch_size)
        embeddings = [SparseEmbedding.from_dense(row, limit) for row in rows]
        return embeddings[0] if single else SparseBatch(embeddings, self._dimension)

"""A MultiVectorEncoder chain (ColBERT-style late interaction): one ``[tokens, dim]`` matrix per
text, the tokens its scoring mask keeps for the verb's task, and MaxSim between them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .enums import OutputMeaning, Similarity
from .errors import InvalidInputError
from .manifest import Manifest
from .model import Model, Unsupported
from .precision import check_precision, quantize, recorded_ranges
from .similarity import maxsim, maxsim_pairwise


class MultiVectorEncoderModel(Model):
    """A MultiVectorEncoder chain: ``encode_query`` / ``encode_document`` / ``encode`` return a
    list of ``[tokens, dim]`` arrays (float32, or the ``precision`` asked for; one array for a
    single string) in input order, and ``similarity`` scores them with MaxSim (or mean-MaxSim) as
    the saved model declares."""

    verbs = ("encode", "encode_query", "encode_document", "similarity", "similarity_pairwise")
    decode, predict, rank = Unsupported(), Unsupported(), Unsupported()

    def __init__(self, root: Path, manifest: Manifest, *, threads: int | None = None,
                 float_products: bool = False) -> None:
        super().__init__(root, manifest, threads=threads, float_products=float_products)
        self._mean = manifest.similarity is Similarity.MEAN_MAXSIM
        self._dimension = int(manifest.embedding_dimension or 0)

    def encode(self, inputs: str | Iterable[str], *, prompt_name: str | None = None, prompt: str | None = None,
               batch_size: int = 32, normalize_embeddings: bool = False, precision: str = "float32",
               ranges: Any = None) -> np.ndarray | list[np.ndarray]:
        """Token embeddings as ``MultiVectorEncoder.encode`` computes them (no task: documents'
        masking), each L2-normalized per token with ``normalize_embeddings``. ``precision``
        quantizes each token vector as ``EmbeddingModel.encode`` does a sentence embedding (see
        ``precision.py``), with the verb's build-time ranges over the calibration texts' tokens or
        ``ranges=[minima, maxima]``."""
        return self._encode("encode", inputs, prompt_name, prompt, batch_size, normalize_embeddings, precision, ranges)

    def encode_query(self, inputs: str | Iterable[str], *, prompt_name: str | None = None, prompt: str | None = None,
                     batch_size: int = 32, normalize_embeddings: bool = False, precision: str = "float32",
                     ranges: Any = None) -> np.ndarray | list[np.ndarray]:
        """Queries: the query prompt, length and expansion, and the query side's scoring mask."""
        return self._encode("encode_query", inputs, prompt_name, prompt, batch_size, normalize_embeddings, precision,
                            ranges)

    def encode_document(self, inputs: str | Iterable[str], *, prompt_name: str | None = None,
                        prompt: str | None = None, batch_size: int = 32, normalize_embeddings: bool = False,
                        precision: str = "float32", ranges: Any = None) -> np.ndarray | list[np.ndarray]:
        """Documents: the document prompt and length, and the document side's scoring mask
        (skiplisted tokens dropped)."""
        return self._encode("encode_document", inputs, prompt_name, prompt, batch_size, normalize_embeddings,
                            precision, ranges)

    def similarity(self, queries: Any, documents: Any) -> np.ndarray:
        """``[len(queries), len(documents)]`` MaxSim scores (divided by each query's token count
        for mean-MaxSim); a document without tokens scores -1e9, as in sentence-transformers."""
        return maxsim(queries, documents, mean=self._mean)

    def similarity_pairwise(self, queries: Any, documents: Any) -> np.ndarray:
        """``[n]`` scores of ``queries[i]`` against ``documents[i]``."""
        return maxsim_pairwise(queries, documents, mean=self._mean)

    def get_embedding_dimension(self) -> int:
        return self._dimension

    def _encode(self, verb: str, inputs: Any, prompt_name: str | None, prompt: str | None, batch_size: int,
                normalize_embeddings: bool, precision: str, ranges: Any) -> np.ndarray | list[np.ndarray]:
        if not isinstance(normalize_embeddings, bool):
            raise InvalidInputError(f"normalize_embeddings must be true or false, got {normalize_embeddings!r}")
        check_precision(precision)
        if ranges is None and precision.endswith("int8"):
            ranges = recorded_ranges(self.manifest, verb, normalize_embeddings)
        rows, single = self._embed(inputs, verb, OutputMeaning.TOKEN_EMBEDDINGS, prompt_name=prompt_name,
                                   prompt=prompt, batch_size=batch_size)
        rows = [np.ascontiguousarray(r, dtype=np.float32) for r in rows]
        if normalize_embeddings:
            rows = [r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12) for r in rows]
        if precision != "float32":  # every token of the call at once, split back per text
            tokens = quantize(np.concatenate([np.empty((0, self._dimension), np.float32), *rows]), precision, ranges)
            rows = np.split(tokens, np.cumsum([len(r) for r in rows])[:-1]) if rows else []
        return rows[0] if single else rows

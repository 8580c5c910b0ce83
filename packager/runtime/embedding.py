"""A dense SentenceTransformer chain: ``encode``, ``encode_query``, ``encode_document`` and
``similarity`` with sentence-transformers' arguments and meanings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .enums import OutputMeaning, Similarity
from .errors import InvalidInputError
from .inputs import check_positive
from .manifest import Manifest
from .model import Model, Unsupported
from .precision import check_precision, quantize, recorded_ranges
from .similarity import similarity


class EmbeddingModel(Model):
    """A dense SentenceTransformer chain."""

    verbs = ("encode", "encode_query", "encode_document", "similarity")
    decode, predict, rank = Unsupported(), Unsupported(), Unsupported()

    def __init__(self, root: Path, manifest: Manifest, *, threads: int | None = None,
                 float_products: bool = False) -> None:
        super().__init__(root, manifest, threads=threads, float_products=float_products)
        self._similarity = manifest.similarity or Similarity.COSINE
        self._dimension = int(manifest.embedding_dimension or 0)

    def encode(self, inputs: Any, *, prompt_name: str | None = None, prompt: str | None = None,
               batch_size: int = 32, normalize_embeddings: bool = False, output_value: str = "sentence_embedding",
               truncate_dim: int | None = None, fetch_urls: bool = False,
               image_strings: bool = True, precision: str = "float32",
               ranges: Any = None) -> np.ndarray | list[np.ndarray]:
        """Embed texts as ``SentenceTransformer.encode`` does: float32 ``[len(inputs), dim]`` in
        input order (one vector for a single string; ``[0, dim]`` for no texts), or with
        ``output_value="token_embeddings"`` one ``[tokens, hidden]`` array per text, if the artifact
        was built with token embeddings. ``truncate_dim`` keeps the first dimensions (Matryoshka).

        A CLIP-style artifact embeds images too, mixed with texts in any order: PIL images, HWC
        uint8 arrays, image file bytes, local image paths and ``data:image/...;base64,`` URIs
        (prompts apply to texts only). Image URLs are fetched only with ``fetch_urls=True``; with
        ``image_strings=False`` every string is a text (what a service wants from its callers).

        ``precision`` is ``float32``, ``int8``, ``uint8`` (the artifact's build-time ranges, or
        ``ranges=[minima, maxima]``), ``binary`` or ``ubinary``, as sentence-transformers'
        ``quantize_embeddings`` makes them (see ``precision.py``)."""
        return self._encode("encode", inputs, prompt_name, prompt, batch_size, normalize_embeddings, output_value,
                            truncate_dim, fetch_urls, image_strings, precision, ranges)

    def encode_query(self, inputs: Any, *, prompt_name: str | None = None, prompt: str | None = None,
                     batch_size: int = 32, normalize_embeddings: bool = False,
                     output_value: str = "sentence_embedding",
                     truncate_dim: int | None = None, fetch_urls: bool = False,
                     image_strings: bool = True, precision: str = "float32",
                     ranges: Any = None) -> np.ndarray | list[np.ndarray]:
        """``encode`` with the query prompt and, for Router chains, the query route."""
        return self._encode("encode_query", inputs, prompt_name, prompt, batch_size, normalize_embeddings, output_value,
                            truncate_dim, fetch_urls, image_strings, precision, ranges)

    def encode_document(self, inputs: Any, *, prompt_name: str | None = None,
                        prompt: str | None = None, batch_size: int = 32, normalize_embeddings: bool = False,
                        output_value: str = "sentence_embedding",
                        truncate_dim: int | None = None, fetch_urls: bool = False,
                        image_strings: bool = True, precision: str = "float32",
                        ranges: Any = None) -> np.ndarray | list[np.ndarray]:
        """``encode`` with the document prompt and, for Router chains, the document route."""
        return self._encode("encode_document", inputs, prompt_name, prompt, batch_size, normalize_embeddings,
                            output_value, truncate_dim, fetch_urls, image_strings, precision, ranges)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        """``[len(embeddings1), len(embeddings2)]`` scores with the similarity function the model declares."""
        return similarity(self._similarity, embeddings1, embeddings2)

    def get_sentence_embedding_dimension(self) -> int:
        return self._dimension

    def _encode(self, verb: str, inputs: Any, prompt_name: str | None, prompt: str | None, batch_size: int,
                normalize_embeddings: bool, output_value: str, truncate_dim: int | None,
                fetch_urls: bool, image_strings: bool, precision: str, ranges: Any) -> np.ndarray | list[np.ndarray]:
        if output_value not in ("sentence_embedding", "token_embeddings"):
            raise InvalidInputError(f"output_value must be 'sentence_embedding' or 'token_embeddings', got "
                                    f"{output_value!r}")
        meaning = OutputMeaning(output_value)
        check_positive(truncate_dim, "truncate_dim", optional=True)
        check_precision(precision)
        if precision != "float32" and meaning is OutputMeaning.TOKEN_EMBEDDINGS:
            raise InvalidInputError("precision applies to sentence embeddings, not token embeddings")
        if ranges is None and precision.endswith("int8"):
            ranges = recorded_ranges(self.manifest, verb, normalize_embeddings, truncate_dim)
        rows, single = self._embed(inputs, verb, meaning, prompt_name=prompt_name, prompt=prompt,
                                   batch_size=batch_size, fetch_urls=fetch_urls, image_strings=image_strings)
        if meaning is OutputMeaning.TOKEN_EMBEDDINGS:
            return rows[0] if single else rows
        embeddings = np.stack(rows) if rows else np.empty((0, self._dimension), np.float32)
        embeddings = embeddings[:, :truncate_dim]  # Matryoshka truncation comes before normalization, as in ST
        if normalize_embeddings:
            embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        embeddings = quantize(embeddings, precision, ranges)
        return embeddings[0] if single else embeddings

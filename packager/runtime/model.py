"""``load`` and the models it returns, with sentence-transformers' verbs and meanings:
``encode``, ``encode_query``, ``encode_document``, ``similarity`` for embedding models (dense or
sparse, plus ``decode`` for sparse), ``predict`` and ``rank`` for cross-encoders."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidInputError, UnsupportedVerbError
from .integrity import verify_artifact
from .manifest import Activation, ChainKind, Manifest, OutputMeaning, Similarity, read_manifest
from .registered import download_registered
from .runner import RouteRunner
from .sparse import SparseBatch, SparseEmbedding

# encode_query / encode_document fall back to these saved prompts, in this order, as sentence-transformers does.
_VERB_PROMPTS = {"encode_query": ("query",), "encode_document": ("document", "passage", "corpus")}


def load(path_or_uri: str | Path, *, threads: int | None = None) -> Model:
    """Load an artifact directory (or an MLflow ``models:/NAME@ALIAS`` URI) after verifying
    every file against the manifest's sha256 digests.

    ``threads`` sets the graph runtime's intra-op threads (default: the runtime's own choice).
    """
    text = str(path_or_uri)
    if not text.startswith("models:/"):
        return _load(Path(path_or_uri), threads)
    download = tempfile.mkdtemp(prefix="packager-")
    try:
        model = _load(download_registered(text, download), threads)
    except BaseException:
        shutil.rmtree(download, ignore_errors=True)
        raise
    weakref.finalize(model, shutil.rmtree, download, ignore_errors=True)  # the download lives as long as the model
    return model


def _load(root: Path, threads: int | None) -> Model:
    manifest = read_manifest(root)
    verify_artifact(root, manifest)
    model_class = {ChainKind.SENTENCE_TRANSFORMER: EmbeddingModel, ChainKind.SPARSE_ENCODER: SparseEncoderModel,
                   ChainKind.CROSS_ENCODER: CrossEncoderModel}[manifest.chain_kind]
    return model_class(root, manifest, threads=threads)


class Model:
    """What every loaded artifact has. A verb its chain kind lacks raises ``UnsupportedVerbError``.
    Models hold no per-call state, so one instance can serve many threads."""

    verbs: tuple[str, ...] = ()

    def __init__(self, root: Path, manifest: Manifest, *, threads: int | None = None) -> None:
        self.manifest = manifest
        self.path = root
        self._runners = {r.name: RouteRunner(root, manifest.format, r, threads=threads) for r in manifest.routes}

    def encode(self, inputs: Any, **kwargs: Any) -> Any:
        self._unsupported("encode")

    def encode_query(self, inputs: Any, **kwargs: Any) -> Any:
        self._unsupported("encode_query")

    def encode_document(self, inputs: Any, **kwargs: Any) -> Any:
        self._unsupported("encode_document")

    def similarity(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        self._unsupported("similarity")

    def decode(self, embeddings: Any, top_k: int | None = None) -> Any:
        self._unsupported("decode")

    def predict(self, inputs: Any, **kwargs: Any) -> Any:
        self._unsupported("predict")

    def rank(self, query: str, documents: list[str], **kwargs: Any) -> list[dict]:
        self._unsupported("rank")

    @property
    def max_seq_length(self) -> int:
        return self._runner(next(iter(self.manifest.verbs))).spec.tokenizer.max_length

    def _unsupported(self, verb: str) -> None:
        raise UnsupportedVerbError(f"{verb}() is not available for a {self.manifest.chain_kind.value} artifact; "
                                   f"it supports: {', '.join(self.verbs)}")

    def _runner(self, verb: str) -> RouteRunner:
        route = self.manifest.verbs.get(verb)
        if route is None:
            raise UnsupportedVerbError(f"this model has no route for {verb}(); it has routes for: "
                                       f"{', '.join(self.manifest.verbs)}")
        return self._runners[route]

    def has_output(self, verb: str, meaning: OutputMeaning | str) -> bool:
        """Whether ``verb``'s route outputs ``meaning`` (e.g. "token_embeddings")."""
        return self._runner(verb).has(OutputMeaning(getattr(meaning, "value", meaning)))

    def prompt_for(self, verb: str, prompt: str | None = None, prompt_name: str | None = None) -> str | None:
        """The prompt sentence-transformers would prepend for this verb and these arguments."""
        prompts = self.manifest.prompts
        for name, value in (("prompt", prompt), ("prompt_name", prompt_name)):
            if value is not None and not isinstance(value, str):
                raise InvalidInputError(f"{name} must be a string or None, got {type(value).__name__}")
        if prompt is not None:
            _check_unicode(prompt, "the prompt")
            return prompt
        if prompt_name is None:
            prompt_name = next((p for p in _VERB_PROMPTS.get(verb, ()) if p in prompts), None)
        if prompt_name is not None:
            if prompt_name not in prompts:
                raise InvalidInputError(f"prompt_name {prompt_name!r} is not defined; prompts: {sorted(prompts)}")
            return prompts[prompt_name]
        return prompts[self.manifest.default_prompt_name] if self.manifest.default_prompt_name else None

    def _embed(self, inputs: Any, verb: str, meaning: OutputMeaning, *, prompt_name: str | None,
               prompt: str | None, batch_size: int) -> tuple[list[np.ndarray], bool]:
        """Rows of ``meaning`` for the texts in ``inputs``, and whether a single string came in."""
        texts, single = _as_texts(inputs)
        _check_batch_size(batch_size)
        runner = self._runner(verb)
        if not runner.has(meaning):
            available = [o.meaning.value for o in runner.spec.outputs]
            raise InvalidInputError(f"output_value {meaning.value!r} is not in this artifact; it has: {available}")
        texts, prompt_length = self._with_prompt(runner, texts, self.prompt_for(verb, prompt, prompt_name))
        return runner.run(texts, meaning, batch_size=batch_size, prompt_length=prompt_length), single

    @staticmethod
    def _with_prompt(runner: RouteRunner, inputs: list, prefix: str | None) -> tuple[list, int]:
        """Prepend the prompt (to the first text of a pair) and measure it for graphs that pool
        without the prompt's tokens. An empty prompt is no prompt, as in sentence-transformers."""
        if not prefix:
            return inputs, 0
        inputs = [prefix + x if isinstance(x, str) else (prefix + x[0], x[1]) for x in inputs]
        return inputs, runner.text.prompt_length(prefix) if "prompt_length" in runner.spec.inputs else 0


class EmbeddingModel(Model):
    """A dense SentenceTransformer chain."""

    verbs = ("encode", "encode_query", "encode_document", "similarity")

    def encode(self, inputs: str | Iterable[str], *, prompt_name: str | None = None, prompt: str | None = None,
               batch_size: int = 32, normalize_embeddings: bool = False, output_value: str = "sentence_embedding",
               truncate_dim: int | None = None) -> np.ndarray | list[np.ndarray]:
        """Embed texts as ``SentenceTransformer.encode`` does: float32 ``[len(inputs), dim]`` in
        input order (one vector for a single string; ``[0, dim]`` for no texts), or with
        ``output_value="token_embeddings"`` one ``[tokens, hidden]`` array per text, if the artifact
        was built with token embeddings. ``truncate_dim`` keeps the first dimensions (Matryoshka)."""
        return self._encode("encode", inputs, prompt_name, prompt, batch_size, normalize_embeddings, output_value,
                            truncate_dim)

    def encode_query(self, inputs: str | Iterable[str], *, prompt_name: str | None = None, prompt: str | None = None,
                     batch_size: int = 32, normalize_embeddings: bool = False,
                     output_value: str = "sentence_embedding",
                     truncate_dim: int | None = None) -> np.ndarray | list[np.ndarray]:
        """``encode`` with the query prompt and, for Router chains, the query route."""
        return self._encode("encode_query", inputs, prompt_name, prompt, batch_size, normalize_embeddings, output_value,
                            truncate_dim)

    def encode_document(self, inputs: str | Iterable[str], *, prompt_name: str | None = None,
                        prompt: str | None = None, batch_size: int = 32, normalize_embeddings: bool = False,
                        output_value: str = "sentence_embedding",
                        truncate_dim: int | None = None) -> np.ndarray | list[np.ndarray]:
        """``encode`` with the document prompt and, for Router chains, the document route."""
        return self._encode("encode_document", inputs, prompt_name, prompt, batch_size, normalize_embeddings,
                            output_value, truncate_dim)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        """``[len(embeddings1), len(embeddings2)]`` scores with the similarity function the model declares."""
        return similarity(self.manifest.similarity, embeddings1, embeddings2)

    def get_sentence_embedding_dimension(self) -> int:
        return self.manifest.embedding_dimension

    def _encode(self, verb: str, inputs: Any, prompt_name: str | None, prompt: str | None, batch_size: int,
                normalize_embeddings: bool, output_value: str, truncate_dim: int | None) -> np.ndarray | list[np.ndarray]:
        meaning = _output_meaning(output_value)
        if truncate_dim is not None and (isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int)
                                         or truncate_dim < 1):
            raise InvalidInputError(f"truncate_dim must be a positive integer, got {truncate_dim!r}")
        rows, single = self._embed(inputs, verb, meaning, prompt_name=prompt_name, prompt=prompt,
                                   batch_size=batch_size)
        if meaning is OutputMeaning.TOKEN_EMBEDDINGS:
            return rows[0] if single else rows
        embeddings = np.stack(rows) if rows else np.empty((0, self.manifest.embedding_dimension), np.float32)
        embeddings = embeddings[:, :truncate_dim]  # Matryoshka truncation comes before normalization, as in ST
        if normalize_embeddings:
            embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        return embeddings[0] if single else embeddings


class SparseEncoderModel(Model):
    """A SparseEncoder chain (SPLADE, static token weights, sparse autoencoder, or a Router of them)."""

    verbs = ("encode", "encode_query", "encode_document", "similarity", "decode")

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
        return similarity(self.manifest.similarity, embeddings1, embeddings2)

    def decode(self, embeddings: SparseEmbedding | SparseBatch, top_k: int | None = None) -> list:
        """``(token, weight)`` pairs by descending weight, per text (a list of lists for a batch)."""
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise InvalidInputError(f"top_k must be a positive integer, got {top_k!r}")
        if isinstance(embeddings, SparseBatch):
            return [self.decode(e, top_k) for e in embeddings]
        if not isinstance(embeddings, SparseEmbedding):
            raise InvalidInputError(f"decode takes what encode returned, got {type(embeddings).__name__}")
        order = np.argsort(-embeddings.values, kind="stable")[:top_k]
        vocabulary = self.manifest.sparse.vocabulary
        runner = next((r for r in self._runners.values() if r.spec.tokenizer.file == vocabulary), None)
        name = runner.text.id_to_token if runner else str
        return [(name(int(embeddings.indices[i])), float(embeddings.values[i])) for i in order]

    def _encode(self, verb: str, inputs: Any, prompt_name: str | None, prompt: str | None, batch_size: int,
                max_active_dims: int | None) -> SparseEmbedding | SparseBatch:
        if max_active_dims is not None and (isinstance(max_active_dims, bool) or not isinstance(max_active_dims, int)
                                            or max_active_dims < 1):
            raise InvalidInputError(f"max_active_dims must be a positive integer, got {max_active_dims!r}")
        sparse = self.manifest.sparse
        if max_active_dims is not None and sparse.max_active_dims_ceiling is not None \
                and max_active_dims > sparse.max_active_dims_ceiling:
            raise InvalidInputError(f"max_active_dims={max_active_dims} exceeds what this model computes: its sparse "
                                    f"autoencoder keeps {sparse.max_active_dims_ceiling} dimensions")
        limit = max_active_dims if max_active_dims is not None else sparse.max_active_dims
        rows, single = self._embed(inputs, verb, OutputMeaning.SPARSE_EMBEDDING, prompt_name=prompt_name,
                                   prompt=prompt, batch_size=batch_size)
        embeddings = [SparseEmbedding.from_dense(row, limit) for row in rows]
        return embeddings[0] if single else SparseBatch(embeddings, self.manifest.embedding_dimension)


class CrossEncoderModel(Model):
    """A CrossEncoder chain: scores for (query, document) pairs."""

    verbs = ("predict", "rank")

    def predict(self, inputs: tuple[str, str] | Iterable[tuple[str, str]], *, batch_size: int = 32,
                activation_fn: Callable[[np.ndarray], np.ndarray] | None = None, apply_softmax: bool = False,
                prompt_name: str | None = None, prompt: str | None = None) -> np.ndarray | np.floating:
        """Scores as ``CrossEncoder.predict`` computes them: the model's activation (or
        ``activation_fn``, a numpy function) on the logits, ``[n]`` for one label, ``[n, labels]``
        otherwise, a scalar (or one row) for a single pair."""
        pairs, single = _as_pairs(inputs)
        _check_batch_size(batch_size)
        if activation_fn is not None and not callable(activation_fn):
            raise InvalidInputError(f"activation_fn must be a function of a numpy array, got {type(activation_fn).__name__}")
        runner = self._runner("predict")
        pairs, prompt_length = self._with_prompt(runner, pairs, self.prompt_for("predict", prompt, prompt_name))
        scoring = self.manifest.scoring
        rows = runner.run(pairs, OutputMeaning.SCORES, batch_size=batch_size, prompt_length=prompt_length)
        scores = np.stack(rows) if rows else np.empty((0, scoring.num_labels), np.float32)
        scores = (activation_fn or ACTIVATIONS[scoring.activation])(scores)
        if scoring.num_labels == 1:
            scores = scores[:, 0]
        elif apply_softmax:
            scores = ACTIVATIONS[Activation.SOFTMAX](scores)
        return scores[0] if single else scores

    def rank(self, query: str, documents: list[str], *, top_k: int | None = None, return_documents: bool = False,
             batch_size: int = 32, activation_fn: Callable[[np.ndarray], np.ndarray] | None = None,
             prompt_name: str | None = None, prompt: str | None = None) -> list[dict]:
        """Documents by descending score: ``[{"corpus_id", "score"(, "text")}]``, as ``CrossEncoder.rank``."""
        if self.manifest.scoring.num_labels != 1:
            raise UnsupportedVerbError("rank() needs a model with one label; use predict() with pairs instead")
        if not isinstance(query, str):
            raise InvalidInputError(f"rank takes a string query, got {type(query).__name__}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise InvalidInputError(f"top_k must be a positive integer, got {top_k!r}")
        documents, _ = _as_texts(documents)
        scores = self.predict([(query, d) for d in documents], batch_size=batch_size, activation_fn=activation_fn,
                              prompt_name=prompt_name, prompt=prompt) if documents else np.empty(0, np.float32)
        results = [{"corpus_id": i, "score": float(s)} | ({"text": documents[i]} if return_documents else {})
                   for i, s in enumerate(scores)]
        return sorted(results, key=lambda r: r["score"], reverse=True)[:top_k]


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp overflows to inf for very negative logits: the result is 0, as it should be
        return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype)


ACTIVATIONS: dict[Activation, Callable[[np.ndarray], np.ndarray]] = {
    Activation.IDENTITY: lambda x: x,
    Activation.SIGMOID: _sigmoid,
    Activation.SOFTMAX: _softmax,
    Activation.TANH: np.tanh,
}


def similarity(function: Similarity, a: Any, b: Any) -> np.ndarray:
    """sentence-transformers' similarity functions: cosine, dot, and negated euclidean / manhattan distance."""
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


def _output_meaning(output_value: str) -> OutputMeaning:
    if output_value not in ("sentence_embedding", "token_embeddings"):
        raise InvalidInputError(f"output_value must be 'sentence_embedding' or 'token_embeddings', got {output_value!r}")
    return OutputMeaning(output_value)


def _check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")


def _as_texts(inputs: Any) -> tuple[list[str], bool]:
    if isinstance(inputs, str):
        _check_unicode(inputs, "the text")
        return [inputs], True
    if inputs is None or isinstance(inputs, (bytes, dict)) or not isinstance(inputs, Iterable):
        raise InvalidInputError(f"expected a string or a list of strings, got {type(inputs).__name__}")
    texts = list(inputs)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(f"expected strings; item {i} is {type(text).__name__}")
        _check_unicode(text, f"item {i}")
    return texts, False


def _check_unicode(text: str, where: str) -> None:
    """Lone surrogates (from bytes decoded with ``surrogateescape``) have no UTF-8 form; the
    tokenizer would fail on them with a TypeError."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InvalidInputError(f"{where} is not valid Unicode ({e.reason} at character {e.start}); "
                                    "decode its bytes with errors='replace' first") from None


def _as_pairs(inputs: Any) -> tuple[list[tuple[str, str]], bool]:
    """A single (text, text) pair, or a list of them, as ``CrossEncoder.predict`` accepts."""
    if inputs is None or isinstance(inputs, (str, bytes, dict)) or not isinstance(inputs, Iterable):
        raise InvalidInputError(f"predict takes a (text, text) pair or a list of pairs, got {type(inputs).__name__}")
    items = list(inputs)
    single = bool(items) and isinstance(items[0], str)
    pairs = [items] if single else items
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(t, str) for t in pair):
            raise InvalidInputError(f"predict takes pairs of two strings; item {i} is {pair!r:.80}")
        for text in pair:
            _check_unicode(text, f"item {i}")
    return [(a, b) for a, b in pairs], single

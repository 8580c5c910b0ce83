"""``load`` and the models it returns, with sentence-transformers' verbs and meanings."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .backends import open_session
from .errors import ArtifactIntegrityError, InvalidInputError, MissingDependencyError
from .integrity import verify_artifact
from .manifest import MANIFEST_FILE, ChainKind, Manifest, OutputMeaning, read_manifest
from .text import TextEncoder

def load(path_or_uri: str | Path, *, threads: int | None = None) -> EmbeddingModel:
    """Load an artifact directory (or an MLflow ``models:/NAME@ALIAS`` URI) after verifying
    every file against the manifest's sha256 digests.

    ``threads`` sets the graph runtime's intra-op threads (default: the runtime's own choice).
    """
    text = str(path_or_uri)
    root = download_registered(text, tempfile.mkdtemp(prefix="packager-")) if text.startswith("models:/") else Path(
        path_or_uri)
    manifest = read_manifest(root)
    verify_artifact(root, manifest)
    if manifest.chain_kind is not ChainKind.SENTENCE_TRANSFORMER:
        raise ArtifactIntegrityError(f"this loader runs SentenceTransformer artifacts, not {manifest.chain_kind.value}")
    return EmbeddingModel(root, manifest, threads=threads)


def download_registered(uri: str, dst: str | Path, *, tracking_uri: str | None = None) -> Path:
    """Download a registered version (``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``) into
    ``dst`` and return the artifact directory inside it. Only this needs mlflow."""
    try:
        import mlflow.artifacts
    except ImportError as e:
        raise MissingDependencyError(
            f"loading {uri} needs mlflow: pip install mlflow (or load a local artifact directory)"
        ) from e
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst), tracking_uri=tracking_uri))
    manifests = sorted(local.glob(f"artifacts/**/{MANIFEST_FILE}"))
    if len(manifests) != 1:
        raise ArtifactIntegrityError(f"{uri} does not hold exactly one packaged artifact (found {len(manifests)})")
    return manifests[0].parent


class EmbeddingModel:
    """A dense SentenceTransformer chain compiled to one graph. Safe to share between threads:
    it holds no per-call state."""

    def __init__(self, root: Path, manifest: Manifest, *, threads: int | None = None) -> None:
        self.manifest = manifest
        self.path = root
        route = manifest.route("default")
        self._route = route
        self._text = TextEncoder(root, route.tokenizer, route.inputs)
        self._session = open_session(root, manifest.format, route, threads=threads)

    @property
    def max_seq_length(self) -> int:
        return self._route.tokenizer.max_length

    def get_sentence_embedding_dimension(self) -> int:
        return self.manifest.embedding_dimension

    def encode(
        self,
        inputs: str | Iterable[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        normalize_embeddings: bool = False,
        output_value: str = "sentence_embedding",
    ) -> np.ndarray | list[np.ndarray]:
        """Embed texts, as ``SentenceTransformer.encode`` does.

        Returns a float32 array ``[len(inputs), dim]`` in input order (one vector for a single
        string), or with ``output_value="token_embeddings"`` one ``[tokens, hidden]`` array per
        text, if the artifact was built with token embeddings.
        """
        texts, single = _as_texts(inputs)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        meaning = self._output_meaning(output_value)
        prefix = self._resolve_prompt(prompt, prompt_name)
        if prefix:
            texts = [prefix + t for t in texts]
        results = self._run(texts, batch_size, meaning)
        if meaning is OutputMeaning.SENTENCE_EMBEDDING:
            embeddings = np.stack(results) if results else np.empty((0, self.manifest.embedding_dimension), np.float32)
            if normalize_embeddings:
                embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
            return embeddings[0] if single else embeddings
        return results[0] if single else results

    def _run(self, texts: list[str], batch_size: int, meaning: OutputMeaning) -> list[np.ndarray]:
        """Tokenize everything once, batch by token length to limit padding, restore input order."""
        output = self._route.output(meaning)
        encodings = self._text.tokenize(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        results: list[np.ndarray] = [None] * len(texts)  # type: ignore[list-item]
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            feeds = self._text.pad([encodings[i] for i in rows])
            values = self._session.run(feeds)[output.name]
            for position, row in enumerate(rows):
                results[row] = _trim_tokens(values[position], feeds["attention_mask"][position]) if (
                    meaning is OutputMeaning.TOKEN_EMBEDDINGS
                ) else values[position]
        return results

    def _output_meaning(self, output_value: str) -> OutputMeaning:
        try:
            meaning = OutputMeaning(output_value)
        except ValueError:
            meaning = None
        if meaning is None or self._route.output(meaning) is None:
            available = [o.meaning.value for o in self._route.outputs]
            raise InvalidInputError(f"output_value {output_value!r} is not in this artifact; it has: {available}")
        return meaning

    def _resolve_prompt(self, prompt: str | None, prompt_name: str | None) -> str | None:
        if prompt is not None:
            return prompt
        prompts = self.manifest.prompts
        if prompt_name is not None:
            if prompt_name not in prompts:
                raise InvalidInputError(f"prompt_name {prompt_name!r} is not defined; prompts: {sorted(prompts)}")
            return prompts[prompt_name]
        if self.manifest.default_prompt_name is not None:
            return prompts[self.manifest.default_prompt_name]
        return None


def _trim_tokens(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Drop trailing padding, as sentence-transformers does for token embeddings."""
    last = int(np.flatnonzero(mask)[-1]) if mask.any() else 0
    return values[: last + 1]


def _as_texts(inputs: Any) -> tuple[list[str], bool]:
    if isinstance(inputs, str):
        return [inputs], True
    if inputs is None or isinstance(inputs, (bytes, dict)) or not isinstance(inputs, Iterable):
        raise InvalidInputError(f"encode takes a string or a list of strings, got {type(inputs).__name__}")
    texts = list(inputs)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(f"encode takes strings; item {i} is {type(text).__name__}")
    return texts, False

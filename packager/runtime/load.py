"""``load``: an artifact directory (or a registered version) verified, then opened as the model of
its chain kind."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

from .cross_encoder import CrossEncoderModel
from .embedding import EmbeddingModel
from .integrity import verify_artifact
from .manifest import ChainKind, read_manifest
from .model import Model
from .multi_vector_encoder import MultiVectorEncoderModel
from .registered import download_registered
from .sparse_encoder import SparseEncoderModel

MODELS: dict[ChainKind, type[Model]] = {ChainKind.SENTENCE_TRANSFORMER: EmbeddingModel,
                                        ChainKind.SPARSE_ENCODER: SparseEncoderModel,
                                        ChainKind.CROSS_ENCODER: CrossEncoderModel,
                                        ChainKind.MULTI_VECTOR_ENCODER: MultiVectorEncoderModel}


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
    return MODELS[manifest.chain_kind](root, manifest, threads=threads)

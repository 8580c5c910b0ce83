"""``load``: an artifact directory (or a registered version) verified, then opened as the model of
its chain kind."""

from __future__ import annotations

import re
import shutil
import tempfile
import weakref
from pathlib import Path

from .cross_encoder import CrossEncoderModel
from .embedding import EmbeddingModel
from .enums import ChainKind
from .errors import InvalidInputError
from .integrity import verify_artifact
from .manifest import read_manifest
from .model import Model
from .multi_vector_encoder import MultiVectorEncoderModel
from .registered import download_registered
from .sparse_encoder import SparseEncoderModel

MODELS: dict[ChainKind, type[Model]] = {ChainKind.SENTENCE_TRANSFORMER: EmbeddingModel,
                                        ChainKind.SPARSE_ENCODER: SparseEncoderModel,
                                        ChainKind.CROSS_ENCODER: CrossEncoderModel,
                                        ChainKind.MULTI_VECTOR_ENCODER: MultiVectorEncoderModel}


_SHA256 = re.compile(r"[0-9a-f]{64}")


def load(path_or_uri: str | Path, *, threads: int | None = None, sha256: str | None = None,
         float_products: bool = False) -> Model:
    """Load an artifact directory (or an MLflow ``models:/NAME@ALIAS`` URI) after verifying
    every file against the manifest's sha256 digests. Nothing from the artifact is imported:
    the model runs on this (installed) runtime, so no code in the artifact runs, before or after.

    ``sha256`` pins the manifest itself (the digest of ``manifest.json``, which ``packager
    inspect`` prints): a copy whose manifest was rewritten and resealed is refused. Without it a
    local directory is checked only against its own manifest.
    ``threads`` sets the graph runtime's intra-op threads (default: the runtime's own choice).
    ``float_products=True`` runs an OpenVINO int8 artifact built on a VNNI host as CPUs without
    VNNI run it, multiplying its int8 weights in float, on every CPU (its gate measured both).
    """
    if sha256 is not None and not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
        raise InvalidInputError(f"sha256={sha256!r}: expected the manifest's digest, 64 lowercase hex digits "
                                "(packager inspect ARTIFACT prints it)")
    text = str(path_or_uri)
    if not text.startswith("models:/"):
        return _load(Path(path_or_uri), threads, sha256, float_products)
    download = tempfile.mkdtemp(prefix="packager-")
    try:
        model = _load(download_registered(text, download), threads, sha256, float_products)
    except BaseException:
        shutil.rmtree(download, ignore_errors=True)
        raise
    weakref.finalize(model, shutil.rmtree, download, ignore_errors=True)  # the download lives as long as the model
    return model


def _load(root: Path, threads: int | None, sha256: str | None, float_products: bool) -> Model:
    manifest = read_manifest(root, sha256=sha256)
    verify_artifact(root, manifest)
    return MODELS[manifest.chain_kind](root, manifest, threads=threads, float_products=float_products)

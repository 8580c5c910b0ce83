"""The torch-free loader that every artifact carries (as ``loader/``).

It depends on the standard library, numpy, tokenizers and onnxruntime only, and imports nothing
from the rest of ``packager``: the build side imports from here, never the other way round.
All imports inside this package are relative so the same files work as ``packager.runtime`` and
as an artifact's ``loader`` package.
"""

from .cross_encoder import CrossEncoderModel
from .embedding import EmbeddingModel
from .errors import (
    ArtifactIntegrityError,
    InvalidInputError,
    MissingDependencyError,
    PackagerError,
    UnsupportedVerbError,
)
from .load import load
from .manifest import Manifest, read_manifest
from .model import Model
from .multi_vector_encoder import MultiVectorEncoderModel
from .sparse import SparseBatch, SparseEmbedding
from .sparse_encoder import SparseEncoderModel

__all__ = [
    "ArtifactIntegrityError",
    "CrossEncoderModel",
    "EmbeddingModel",
    "InvalidInputError",
    "Manifest",
    "MissingDependencyError",
    "Model",
    "MultiVectorEncoderModel",
    "PackagerError",
    "SparseBatch",
    "SparseEmbedding",
    "SparseEncoderModel",
    "UnsupportedVerbError",
    "load",
    "read_manifest",
]

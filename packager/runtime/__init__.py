"""The torch-free loader that every artifact carries (as ``loader/``).

It depends on the standard library, numpy, tokenizers and onnxruntime only, and imports nothing
from the rest of ``packager``: the build side imports from here, never the other way round.
All imports inside this package are relative so the same files work as ``packager.runtime`` and
as an artifact's ``loader`` package.
"""

from .errors import ArtifactIntegrityError, InvalidInputError, MissingDependencyError, PackagerError
from .manifest import Manifest, read_manifest
from .model import EmbeddingModel, load

__all__ = [
    "ArtifactIntegrityError",
    "EmbeddingModel",
    "InvalidInputError",
    "Manifest",
    "MissingDependencyError",
    "PackagerError",
    "load",
    "read_manifest",
]

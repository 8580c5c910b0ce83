"""Registered versions in an MLflow model registry: the only part of the runtime that needs
mlflow, imported lazily for ``models:/`` URIs.

The registry's database and its artifact store are separate systems: the version's tag
``packager.manifest.sha256`` (written when it was registered) pins the manifest, and the manifest
pins every other file, so an artifact changed in the store after registration is refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .errors import ArtifactIntegrityError, InvalidInputError, MissingDependencyError
from .integrity import sha256_file, verify_artifact
from .manifest import MANIFEST_FILE, read_manifest

MANIFEST_SHA256_TAG = "packager.manifest.sha256"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def resolve_version(uri: str, client: Any) -> Any:
    """The model version (an ``mlflow.entities.model_registry.ModelVersion``) that
    ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` names now."""
    from mlflow.exceptions import MlflowException

    match = _URI.match(uri)
    if not match:
        raise InvalidInputError(f"{uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    try:
        if match["alias"]:
            return client.get_model_version_by_alias(match["name"], match["alias"])
        return client.get_model_version(match["name"], match["version"])
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            raise InvalidInputError(f"{uri}: no such registered model, version or alias ({e.message})") from e
        raise


def download_registered(uri: str, dst: str | Path, *, tracking_uri: str | None = None) -> Path:
    """Download a registered version (``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``) into
    ``dst``, verify it, and return the artifact directory inside it.

    An alias is resolved once, to a version number, so a promotion while downloading cannot mix
    two versions.
    """
    try:
        import mlflow.artifacts
        from mlflow import MlflowClient
    except ImportError as e:
        raise MissingDependencyError(
            f"loading {uri} needs mlflow: pip install mlflow (or load a local artifact directory)"
        ) from e
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    version = resolve_version(uri, client)
    pinned = f"models:/{version.name}/{version.version}"
    location = client.get_model_version_download_uri(version.name, version.version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(dst),
                                                     tracking_uri=tracking_uri))
    manifests = sorted(local.glob(f"artifacts/**/{MANIFEST_FILE}"))
    if len(manifests) != 1:
        raise ArtifactIntegrityError(f"{uri} ({pinned}) does not hold exactly one packaged artifact "
                                     f"(found {len(manifests)})")
    root = manifests[0].parent
    recorded = version.tags.get(MANIFEST_SHA256_TAG)
    if recorded is None:
        raise ArtifactIntegrityError(f"{uri} ({pinned}) has no {MANIFEST_SHA256_TAG} tag: it was not registered "
                                     "by chain-packager, so its manifest cannot be checked")
    if sha256_file(root / MANIFEST_FILE) != recorded:
        raise ArtifactIntegrityError(f"{uri} ({pinned}): {MANIFEST_FILE} in the artifact store differs from the one "
                                     "registered (its sha256 tag); refusing it")
    verify_artifact(root, read_manifest(root))
    return root

"""The model registry behind a small protocol: MLflow in production, an in-memory fake in unit tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from packager.runtime.manifest import Manifest

CANDIDATE_ALIAS = "candidate"


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    alias: str | None
    model_uri: str
    tracking_uri: str


class ModelStore(Protocol):
    def ping(self) -> None:
        """Raise ``RegistryError`` now if the registry cannot be reached at all."""
        ...

    def register(self, artifact: Path, manifest: Manifest, name: str) -> RegisteredVersion:
        """Upload ``artifact``, register a new version of ``name`` and set the candidate alias
        only once the upload is verified; leave no version behind on failure."""
        ...


def open_store(tracking_uri: str | None = None) -> ModelStore:
    from packager.registry.mlflow_store import MlflowStore

    return MlflowStore(tracking_uri)

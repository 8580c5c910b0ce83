"""The model registry: MLflow (``mlflow_store.py``, the only module that imports mlflow), with
the embedded SQLite store in the working directory by default, or any MLflow tracking server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from packager.registry.mlflow_store import MlflowStore

CANDIDATE_ALIAS = "candidate"


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    alias: str | None  # the alias this call set, if any
    model_uri: str
    tracking_uri: str
    existing: bool = False  # an identical build was already registered; nothing new was created
    run_id: str | None = None  # the MLflow run that holds a new version's files and reports


def open_store(tracking_uri: str | None = None) -> MlflowStore:
    from packager.registry.mlflow_store import MlflowStore

    return MlflowStore(tracking_uri)

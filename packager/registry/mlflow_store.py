"""MLflow as the registry: the only module that imports mlflow.

Each artifact becomes an MLflow pyfunc model (``pyfunc.py``, logged as code) whose ``predict``
runs the artifact's own loader, with the runtime's pip requirements only. A new version gets the
``candidate`` alias once its uploaded copy has been downloaded and verified against the manifest.
"""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from packager.artifact import PARITY_FILE
from packager.errors import MissingDependencyError, RegistryError
from packager.registry import CANDIDATE_ALIAS, RegisteredVersion
from packager.runtime.integrity import verify_artifact
from packager.runtime.manifest import ChainKind, Format, Manifest, read_manifest
from packager.runtime.model import download_registered

log = logging.getLogger(__name__)

EXPERIMENT = "chain-packager"
PYFUNC_CODE = Path(__file__).with_name("pyfunc.py")


def default_tracking_uri() -> str:
    """The embedded default: an SQLite MLflow store in the working directory."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


class MlflowStore:
    def __init__(self, tracking_uri: str | None = None) -> None:
        try:
            import mlflow  # noqa: F401
        except ImportError as e:
            raise MissingDependencyError("registering needs mlflow: pip install 'chain-packager[build]'") from e
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
        self._client = MlflowClient(self.tracking_uri)

    def ping(self) -> None:
        """Fail fast, before any export, when a tracking server does not answer at all."""
        if urlparse(self.tracking_uri).scheme not in ("http", "https"):
            return
        try:
            urllib.request.urlopen(f"{self.tracking_uri.rstrip('/')}/health", timeout=10).close()
        except urllib.error.HTTPError:
            return  # it answers; the real calls will say precisely what is wrong
        except (OSError, ValueError) as e:
            raise RegistryError(
                f"the MLflow tracking server at {self.tracking_uri} does not answer ({e}); start it, or fix "
                "--tracking-uri / MLFLOW_TRACKING_URI"
            ) from e

    def register(self, artifact: Path, manifest: Manifest, name: str) -> RegisteredVersion:
        try:
            with _tracking_uri(self.tracking_uri):
                return self._register(artifact, manifest, name)
        except RegistryError:
            raise
        except Exception as e:
            raise RegistryError(
                f"registering {artifact} as {name!r} in {self.tracking_uri} failed: {type(e).__name__}: {e}. "
                f"The artifact is kept at {artifact}."
            ) from e

    def _register(self, artifact: Path, manifest: Manifest, name: str) -> RegisteredVersion:
        import mlflow

        log.info("registry: logging %s to %s", artifact.name, self.tracking_uri)
        with mlflow.start_run(experiment_id=self._experiment_id(), run_name=artifact.name) as run:
            mlflow.set_tags(lineage_tags(manifest))
            mlflow.log_metrics({f"parity.{k}": v for k, v in manifest.parity.metrics.items()})
            logged = mlflow.pyfunc.log_model(
                name="model", python_model=str(PYFUNC_CODE), artifacts={"artifact": str(artifact)},
                pip_requirements=runtime_requirements(manifest.format), signature=_signature(manifest),
                input_example=_input_example(manifest),
            )
            mlflow.log_artifact(str(artifact / PARITY_FILE), artifact_path="reports")
        version = mlflow.register_model(logged.model_uri, name, tags=lineage_tags(manifest))
        try:
            self._verify_upload(name, version.version)
            self._client.set_registered_model_alias(name, CANDIDATE_ALIAS, version.version)
        except Exception:
            self._client.delete_model_version(name, version.version)
            raise
        log.info("registry: %s version %s, alias %s (run %s)", name, version.version, CANDIDATE_ALIAS,
                 run.info.run_id)
        return RegisteredVersion(name=name, version=str(version.version), alias=CANDIDATE_ALIAS,
                                 model_uri=f"models:/{name}/{version.version}", tracking_uri=self.tracking_uri)

    def _experiment_id(self) -> str:
        experiment = self._client.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self._client.create_experiment(EXPERIMENT, artifact_location=self._artifact_location())
        except Exception:  # another process created it first
            experiment = self._client.get_experiment_by_name(EXPERIMENT)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _artifact_location(self) -> str | None:
        """Next to an SQLite database file; servers manage their own artifact store."""
        parsed = urlparse(self.tracking_uri)
        if parsed.scheme != "sqlite":
            return None
        database = Path(self.tracking_uri[len("sqlite:///"):])
        return (database.parent / "mlartifacts").resolve().as_uri()

    def _verify_upload(self, name: str, version: str) -> None:
        """Download what the registry now holds and check it byte for byte against its manifest."""
        with tempfile.TemporaryDirectory(prefix="packager-verify-") as tmp:
            root = download_registered(f"models:/{name}/{version}", tmp, tracking_uri=self.tracking_uri)
            verify_artifact(root, read_manifest(root))


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (runs, log_model) reads a process-wide tracking URI and exports it to
    the environment; set it for the duration of one registration and put the caller's back."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    previous = utils._tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def lineage_tags(manifest: Manifest) -> dict[str, str]:
    tags = {
        "packager.artifact": manifest.name, "packager.chain_kind": manifest.chain_kind.value,
        "packager.format": manifest.format.value, "packager.precision": manifest.precision.value,
        "packager.recipe": manifest.recipe.name,
        "packager.source.kind": manifest.source.kind.value, "packager.source.location": manifest.source.location,
        "packager.source.sha256": manifest.source.sha256, "packager.source.revision": manifest.source.revision or "",
        "packager.parity.status": manifest.parity.status.value,
    }
    tags.update({f"packager.parity.{k}": f"{v:.8g}" for k, v in manifest.parity.metrics.items()})
    tags.update({f"packager.tool.{k}": v for k, v in manifest.tools.items()})
    return tags


def runtime_requirements(fmt: Format = Format.ONNX) -> list[str]:
    """The loader's dependencies for one artifact format, at the versions the parity gate ran with."""
    engine = {Format.ONNX: "onnxruntime", Format.OPENVINO: "openvino"}[fmt]
    return [f"{name}=={version(name)}" for name in ("numpy", "tokenizers", engine)]


def _signature(manifest: Manifest) -> Any:
    """Strings in, float32 rows out; for cross-encoders, (query, document) string columns in."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec

    if manifest.chain_kind is ChainKind.CROSS_ENCODER:
        labels = manifest.scoring.num_labels
        return ModelSignature(
            inputs=Schema([ColSpec(DataType.string, "query"), ColSpec(DataType.string, "document")]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,) if labels == 1 else (-1, labels))]),
        )
    return ModelSignature(inputs=Schema([ColSpec(DataType.string)]),
                          outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, manifest.embedding_dimension))]))


def _input_example(manifest: Manifest) -> Any:
    if manifest.chain_kind is ChainKind.CROSS_ENCODER:
        import pandas as pd

        return pd.DataFrame({"query": ["What is a packaged model?"], "document": ["A model with its own loader."]})
    return ["An example sentence to embed."]

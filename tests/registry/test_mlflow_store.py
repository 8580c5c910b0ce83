"""Registration in a real MLflow store (SQLite, embedded): versions, alias, lineage, pyfunc."""

from __future__ import annotations

import json

import numpy as np
import pytest

from packager.errors import RegistryError
from packager.registry import CANDIDATE_ALIAS
from packager.registry.mlflow_store import MlflowStore, runtime_requirements
from packager.runtime import load
from packager.runtime.manifest import read_manifest


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the embedded default lives in the working directory
    return MlflowStore()


def test_register_sets_candidate_tags_and_a_loadable_pyfunc(store, tiny_artifacts, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    artifact = tiny_artifacts["mean-normalize"]
    manifest = read_manifest(artifact)
    registered = store.register(artifact, manifest, "tiny-embedder")
    assert store.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert (registered.name, registered.version, registered.alias) == ("tiny-embedder", "1", CANDIDATE_ALIAS)

    client = MlflowClient(store.tracking_uri)
    version = client.get_model_version_by_alias("tiny-embedder", CANDIDATE_ALIAS)
    assert str(version.version) == "1"
    assert version.tags["packager.format"] == "onnx" and version.tags["packager.precision"] == "fp32"
    assert version.tags["packager.source.sha256"] == manifest.source.sha256
    assert float(version.tags["packager.parity.encode.min_cosine"]) >= 0.99999
    run = client.get_run(version.run_id)
    assert run.data.metrics["parity.encode.min_cosine"] >= 0.99999
    reports = [a.path for a in client.list_artifacts(version.run_id, "reports")]
    assert reports == ["reports/parity.json"]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)  # how a service points at the registry
    pyfunc = mlflow.pyfunc.load_model(f"models:/tiny-embedder@{CANDIDATE_ALIAS}")
    texts = ["registered models serve the same numbers", "a second text"]
    np.testing.assert_allclose(pyfunc.predict(texts), load(artifact).encode(texts), atol=1e-6)
    from_registry = load(f"models:/tiny-embedder@{CANDIDATE_ALIAS}")
    np.testing.assert_allclose(from_registry.encode(texts), load(artifact).encode(texts), atol=1e-6)

    requirements = (from_registry.path.parents[1] / "requirements.txt").read_text().split()
    assert set(runtime_requirements()) <= set(requirements)
    assert not any(r.startswith(("torch", "transformers", "sentence-transformers", "chain-packager"))
                   for r in requirements)


def test_each_registration_is_a_new_version(store, tiny_artifacts):
    artifact = tiny_artifacts["mean"]
    manifest = read_manifest(artifact)
    assert store.register(artifact, manifest, "twice").version == "1"
    assert store.register(artifact, manifest, "twice").version == "2"


DOWN = "http://127.0.0.1:9"  # the discard port: nothing listens there


def test_unreachable_registry_fails_the_build_before_any_export(tmp_path, tiny_chains):
    from packager.cli import main

    out = tmp_path / "dist"
    assert main(["build", str(tiny_chains["mean"]), "--out", str(out), "--register", "x", "--tracking-uri", DOWN]) == 7
    assert not out.exists()


def test_registry_failure_keeps_the_artifact_and_says_where(tiny_artifacts, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    artifact = tiny_artifacts["mean"]
    with pytest.raises(RegistryError, match=f"kept at {artifact}"):
        MlflowStore(DOWN).register(artifact, read_manifest(artifact), "nowhere")
    assert read_manifest(artifact).name == "mean-onnx-fp32"


def test_registering_leaves_the_process_tracking_uri_alone(store, tiny_artifacts):
    import mlflow

    before = mlflow.get_tracking_uri()
    store.register(tiny_artifacts["mean"], read_manifest(tiny_artifacts["mean"]), "scoped")
    assert mlflow.get_tracking_uri() == before


def test_build_with_register_through_the_cli(tmp_path, tiny_chains, monkeypatch):
    from packager.cli import main

    monkeypatch.chdir(tmp_path)
    report = tmp_path / "report.json"
    assert main(["build", str(tiny_chains["cls-dense"]), "--register", "cli-model", "--report", str(report),
                 "-q"]) == 0
    registered = json.loads(report.read_text())["variants"][0]["registered"]
    assert registered["model_uri"] == "models:/cli-model/1" and registered["alias"] == CANDIDATE_ALIAS
    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "dist" / "cls-dense-onnx-fp32").is_dir()


@pytest.mark.parametrize("name", ["ce-sigmoid", "splade-max"])
def test_every_chain_kind_registers_as_a_working_pyfunc(name, store, tiny_artifacts, monkeypatch):
    import mlflow
    import pandas as pd

    artifact = tiny_artifacts[name]
    registered = store.register(artifact, read_manifest(artifact), name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(registered.model_uri)
    model = load(artifact)
    if name.startswith("ce-"):
        pairs = pd.DataFrame({"query": ["what is a tuple", "a query"], "document": ["an immutable sequence", "text"]})
        np.testing.assert_allclose(pyfunc.predict(pairs), model.predict(pairs.values.tolist()), atol=1e-6)
    else:
        texts = ["sparse vectors for search", "another text"]
        np.testing.assert_allclose(pyfunc.predict(texts), model.encode(texts).toarray(), atol=1e-6)

"""The registry against the embedded MLflow store (SQLite in the working directory): register,
lineage, idempotence, promote, pull, list, register later, tampering and interrupted registrations."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement

from conftest import sparse_rows
from packager.cli import main
from packager.errors import RegistryError
from packager.registry.lineage import BUILD_KEY_TAG, VERIFIED_TAG, git_tags
from packager.registry.mlflow_store import MlflowStore
from packager.registry.requirements import runtime_requirements
from packager.registry.store import CANDIDATE_ALIAS
from packager.runtime import load
from packager.runtime.integrity import sha256_file
from packager.runtime.manifest import read_manifest
from packager.runtime.registered import MANIFEST_SHA256_TAG


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An embedded store that is not in the working directory (MLflow's own default), so nothing
    works by accident through the process-wide tracking URI."""
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return MlflowStore(f"sqlite:///{tmp_path / 'registry' / 'mlflow.db'}")


def test_the_default_store_is_sqlite_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert MlflowStore().tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


def _client(store):
    from mlflow import MlflowClient

    return MlflowClient(store.tracking_uri, registry_uri=store.tracking_uri)


def _stored_artifact(store, name: str, version: str) -> Path:
    """The registry's own copy of a version's artifact (the embedded store keeps files on disk)."""
    location = _client(store).get_model_version_download_uri(name, version)
    assert location.startswith("file://"), location
    manifests = list(Path(location[len("file://"):]).glob("artifacts/**/manifest.json"))
    assert len(manifests) == 1
    return manifests[0].parent


def test_register_sets_candidate_lineage_reports_and_a_loadable_pyfunc(store, tiny_artifacts, tmp_path, monkeypatch):
    import mlflow

    artifact = tiny_artifacts["mean-normalize"]
    manifest = read_manifest(artifact)
    registered = store.register(artifact, "tiny-embedder", figures={"build.seconds": 12.5})
    assert (registered.name, registered.version, registered.alias, registered.existing) == (
        "tiny-embedder", "1", CANDIDATE_ALIAS, False)

    client = _client(store)
    version = client.get_model_version_by_alias("tiny-embedder", CANDIDATE_ALIAS)
    tags = version.tags
    assert str(version.version) == "1" and tags[VERIFIED_TAG] == "true"
    assert (tags["packager.format"], tags["packager.precision"], tags["packager.recipe"]) == (
        "onnx", "fp32", "onnx-fp32")
    assert tags["packager.source.sha256"] == manifest.source.sha256
    assert tags["packager.source.location"] == manifest.source.location
    assert tags["packager.tool.onnxruntime"] == manifest.tools["onnxruntime"]
    assert tags[MANIFEST_SHA256_TAG] == sha256_file(artifact / "manifest.json")
    assert len(tags[BUILD_KEY_TAG]) == 64
    assert float(tags["packager.parity.encode.min_cosine"]) >= 0.99999
    run = client.get_run(version.run_id)
    assert run.data.metrics["parity.encode.min_cosine"] >= 0.99999
    assert run.data.metrics["build.seconds"] == 12.5
    assert run.data.metrics["artifact.bytes"] == sum(d.size for d in manifest.files)
    assert sorted(a.path for a in client.list_artifacts(version.run_id, "reports")) == [
        "reports/README.md", "reports/parity.json"]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)  # how a service points at the registry
    pyfunc = mlflow.pyfunc.load_model(f"models:/tiny-embedder@{CANDIDATE_ALIAS}")
    texts = ["registered models serve the same numbers", "a second text"]
    np.testing.assert_allclose(pyfunc.predict(texts), load(artifact).encode(texts), atol=1e-6)
    from_registry = load(f"models:/tiny-embedder@{CANDIDATE_ALIAS}")
    np.testing.assert_allclose(from_registry.encode(texts), load(artifact).encode(texts), atol=1e-6)

    requirements = (from_registry.path.parents[1] / "requirements.txt").read_text().split()
    written = {r.name: r.specifier for r in map(Requirement, requirements)}  # MLflow reorders the specifiers
    for wanted in map(Requirement, runtime_requirements()):  # from the gate's versions up to the next breaking one
        assert written[wanted.name] == wanted.specifier and wanted.specifier.contains(package_version(wanted.name))
    assert not any(r.startswith(("torch", "transformers", "sentence-transformers", "chain-packager"))
                   for r in requirements)
    download = from_registry.path.parents[2]
    del from_registry
    assert not download.exists()  # the download lives as long as the model


def test_the_same_build_is_not_registered_twice_unless_forced(store, tiny_artifacts, copy_artifact):
    artifact = tiny_artifacts["mean"]
    assert store.register(artifact, "twice").version == "1"
    again = store.register(artifact, "twice")
    assert (again.version, again.existing, again.alias) == ("1", True, None)
    forced = store.register(artifact, "twice", force_new_version=True)
    assert (forced.version, forced.existing) == ("2", False)
    assert store.register(tiny_artifacts["cls-dense"], "twice").version == "3"  # another build is another version
    assert [v.version for v in store.versions("twice")] == ["3", "2", "1"]


def test_lineage_records_the_calling_repository(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=ci@example.com", "-c", "user.name=ci"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "packaging.txt").write_text("one\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "release"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_tags(repo) == {"packager.git.commit": head, "packager.git.dirty": "false"}
    (repo / "packaging.txt").write_text("two\n")
    assert git_tags(repo)["packager.git.dirty"] == "true"
    outside = tmp_path / "outside"
    outside.mkdir()
    assert git_tags(outside) == {}  # not a repository: no git tags


@pytest.mark.parametrize("tamper", ["graph byte", "manifest", "added file"])
def test_a_tampered_registry_copy_is_neither_promoted_nor_pulled(tamper, store, tiny_artifacts, tmp_path, capsys):
    store.register(tiny_artifacts["mean"], "tampered")
    stored = _stored_artifact(store, "tampered", "1")
    if tamper == "graph byte":
        data = bytearray((stored / "model.onnx").read_bytes())
        data[len(data) // 2] ^= 1
        (stored / "model.onnx").write_bytes(bytes(data))
    elif tamper == "manifest":  # a consistent edit: the manifest's own digests still hold, its tag does not
        manifest = json.loads((stored / "manifest.json").read_text())
        manifest["name"] = "renamed"
        (stored / "manifest.json").write_text(json.dumps(manifest))
    else:
        (stored / "extra.py").write_text("print('hello')\n")
    uri = ["--tracking-uri", store.tracking_uri]
    capsys.readouterr()
    assert main(["promote", "tampered", "--version", "1", "--alias", "champion", *uri]) == 8
    assert "champion" not in _client(store).get_registered_model("tampered").aliases
    out = tmp_path / "pulled"
    assert main(["pull", "models:/tampered/1", "--out", str(out), *uri]) == 8
    assert list(out.iterdir()) == []
    err = capsys.readouterr().err
    assert ("sha256 tag" if tamper == "manifest" else "does not match its manifest") in err


@pytest.mark.parametrize("point", ["registry.uploaded", "registry.registered"])
def test_a_registration_killed_half_way_leaves_nothing_promotable(point, store, tiny_artifacts, tmp_path):
    """SIGKILL after the upload (no version yet) or after the version was created (not yet
    verified): no alias points at it, it cannot be promoted, and the next run registers anew."""
    artifact = tiny_artifacts["mean"]
    env = {**os.environ, "PACKAGER_FAILPOINTS": point}
    done = subprocess.run([sys.executable, "-m", "packager.cli", "register", str(artifact), "--name", "killed",
                           "--tracking-uri", store.tracking_uri, "-q"], env=env, cwd=tmp_path, capture_output=True)
    assert done.returncode == -9, done.stderr.decode()
    client = _client(store)
    versions = client.search_model_versions("name = 'killed'")
    if point == "registry.uploaded":
        assert versions == []
    else:
        assert [v.tags.get(VERIFIED_TAG) for v in versions] == [None]
        assert client.get_registered_model("killed").aliases == {}
        with pytest.raises(RegistryError, match="never verified"):
            store.promote("killed", "champion", version="1")
    again = store.register(artifact, "killed")  # the interrupted version does not count as the same build
    assert not again.existing and again.alias == CANDIDATE_ALIAS


DOWN = "http://127.0.0.1:9"  # the discard port: nothing listens there


def test_unreachable_registry_fails_the_build_before_any_export(tmp_path, tiny_chains):
    out = tmp_path / "dist"
    assert main(["build", str(tiny_chains["mean"]), "--out", str(out), "--register", "x", "--tracking-uri", DOWN]) == 7
    assert not out.exists()


def test_registry_failure_keeps_the_artifact_and_says_how_to_register_later(tiny_artifacts, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    artifact = tiny_artifacts["mean"]
    with pytest.raises(RegistryError, match=f"kept at {artifact}; register it later with `packager register"):
        MlflowStore(DOWN).register(artifact, "nowhere")
    assert read_manifest(artifact).name == "mean-onnx-fp32"


class _Unauthorized(BaseHTTPRequestHandler):
    """A tracking server behind authentication we do not have: /health answers, the API says 401."""

    def _answer(self) -> None:
        status, body = (200, b"OK") if self.path == "/health" else (401, b'{"error_code": "UNAUTHENTICATED"}')
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer  # noqa: N815 (the names http.server dispatches to)

    def log_message(self, *args) -> None:
        pass


def test_an_authentication_failure_says_what_to_set(tiny_artifacts, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["register", str(tiny_artifacts["mean"]), "--name", "x", "--tracking-uri", uri]) == 7
    finally:
        server.shutdown()
    err = capsys.readouterr().err
    assert "refused our credentials" in err and "MLFLOW_TRACKING_USERNAME" in err and "Traceback" not in err


def test_registering_leaves_the_process_tracking_uri_alone(store, tiny_artifacts, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///a-service-of-its-own.db")
    before = mlflow.get_tracking_uri()
    store.register(tiny_artifacts["mean"], "scoped")
    assert mlflow.get_tracking_uri() == before
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///a-service-of-its-own.db"


def test_build_with_register_through_the_cli(tmp_path, tiny_chains, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "dist" / "cls-dense-report" / "report.json"
    argv = ["build", str(tiny_chains["cls-dense"]), "--register", "cli-model", "-q"]
    assert main(argv) == 0
    registered = json.loads(report.read_text())["variants"][0]["registered"]
    assert registered["model_uri"] == "models:/cli-model/1" and registered["alias"] == CANDIDATE_ALIAS
    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "dist" / "cls-dense-onnx-fp32").is_dir()
    capsys.readouterr()
    assert main(argv) == 0  # the same build again: reported, not registered twice
    assert "already registered as models:/cli-model/1" in capsys.readouterr().out
    assert json.loads(report.read_text())["variants"][0]["registered"]["existing"] is True
    assert main([*argv, "--force-new-version"]) == 0
    assert json.loads(report.read_text())["variants"][0]["registered"]["model_uri"] == "models:/cli-model/2"


@pytest.mark.parametrize("name", ["ce-sigmoid", "ce-3-labels", "ce-chat", "splade-max", "router-dense",
                                  "router-sparse"])
def test_every_chain_kind_registers_as_a_working_pyfunc(name, store, tiny_artifacts, monkeypatch):
    import mlflow
    import pandas as pd

    artifact = tiny_artifacts[name]
    registered = store.register(artifact, name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(registered.model_uri)
    model = load(artifact)
    from_registry = load(registered.model_uri)  # its download lives as long as it does
    requirements = (from_registry.path.parents[1] / "requirements.txt").read_text().split()
    assert any(Requirement(r).name == "jinja2" for r in requirements) == (name == "ce-chat"), requirements
    signature = pyfunc.metadata.signature
    assert signature.inputs is None  # the pyfunc checks its inputs itself (see test_hostile_registry)
    if name.startswith("ce-"):
        assert list(_serving_example(registered, store)["dataframe_split"]["columns"]) == ["query", "document"]
        pairs = pd.DataFrame({"query": ["what is a tuple", "a query"], "document": ["an immutable sequence", "text"]})
        np.testing.assert_allclose(pyfunc.predict(pairs), model.predict(pairs.values.tolist()), atol=1e-6)
        assert {p.name for p in signature.params.params} <= set(inspect.signature(model.predict).parameters)
        return
    # each one an option of the verbs, besides the verb and (embedders) OpenAI's name for truncate_dim
    declared = {p.name for p in signature.params.params}
    assert "verb" in declared and declared - {"verb", "dimensions"} <= set(inspect.signature(model.encode).parameters)
    assert ("dimensions" in declared) == (model.manifest.chain_kind.value == "SentenceTransformer"), declared
    texts = ["sparse vectors for search", "another text"]
    sparse = name.endswith(("max", "sparse"))
    dense = (lambda x: x.toarray()) if sparse else (lambda x: x)
    for verb in ("encode", "encode_query", "encode_document"):
        got, want = pyfunc.predict(texts, params={"verb": verb}), getattr(model, verb)(texts)
        if sparse:  # each text's indices and values
            assert list(got.columns) == ["indices", "values"]
            got = sparse_rows(got.itertuples(index=False), want.dimension)
        np.testing.assert_allclose(got, dense(want), atol=1e-6)
    if "dimensions" in declared:  # truncate_dim, renormalized where the chain's own vectors are unit vectors
        normalizes = any(m.kind.value == "Normalize" for m in model.manifest.modules)
        got = pyfunc.predict(texts, params={"dimensions": 4})
        np.testing.assert_allclose(got, model.encode(texts, truncate_dim=4, normalize_embeddings=normalizes),
                                   atol=1e-6)
    if len(model.manifest.routes) > 1:  # the routes differ, and the input example shows the query route
        assert not np.allclose(dense(model.encode_query(texts)), dense(model.encode_document(texts)))
        assert _serving_example(registered, store)["params"] == {"verb": "encode_query"}


def _serving_example(registered, store) -> dict:
    from mlflow.artifacts import download_artifacts

    location = _client(store).get_model_version_download_uri(registered.name, registered.version)
    local = download_artifacts(artifact_uri=location, tracking_uri=store.tracking_uri)
    return json.loads((Path(local) / "serving_input_example.json").read_text())

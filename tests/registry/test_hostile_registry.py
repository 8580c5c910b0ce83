"""The registry against hostile copies, bad requests, races and crashes: a pyfunc that checks
its artifact before importing it, serving requests refused as sentence-transformers would refuse
them (HTTP 400 through MLflow's own scoring code), the same build registered by several jobs at
once, and what killed registrations and pulls leave behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from canaries import CANARY_ENV, edit_loader, plant_pyc
from packager.cli import main
from packager.failpoints import BARRIER_ENV
from packager.publish import seal
from packager.registry.lineage import OWNER_TAG, VERIFIED_TAG
from packager.registry.mlflow_store import MlflowStore
from packager.runtime import ArtifactIntegrityError, load
from packager.runtime.manifest import read_manifest


@pytest.fixture
def store(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return MlflowStore(f"sqlite:///{tmp_path / 'registry' / 'mlflow.db'}")


def _pyfunc(store, uri: str, monkeypatch):
    """The version through MLflow's own loader, pointed at the registry as a service points it."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
    return mlflow.pyfunc.load_model(uri)


def _client(store):
    from mlflow import MlflowClient

    return MlflowClient(store.tracking_uri, registry_uri=store.tracking_uri)


def _stored_artifact(store, name: str, version: str) -> Path:
    location = _client(store).get_model_version_download_uri(name, version)
    manifests = list(Path(location[len("file://"):]).glob("artifacts/**/manifest.json"))
    assert len(manifests) == 1
    return manifests[0].parent


def _serve(pyfunc, payload: dict) -> tuple[int, str]:
    """One request through MLflow's scoring server code, in process: (HTTP status, body)."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc.scoring_server import invocations

    try:
        response = invocations(json.dumps(payload), "application/json", pyfunc, pyfunc.metadata.get_input_schema())
    except MlflowException as e:
        return e.get_http_status_code(), e.message
    return response.status, response.response


EMBEDDER_GARBAGE = {
    "numbers": {"inputs": [1, 2]},
    "a null among texts": {"inputs": ["a", 1, None]},
    "nested lists": {"inputs": [["nested"]]},
    "a number in a frame": {"dataframe_records": [{"text": 5}]},
    "a query/document frame": {"dataframe_split": {"columns": ["query", "document"], "data": [["q", "d"]]}},
    "an unknown verb": {"inputs": ["a"], "params": {"verb": "nope"}},
}
CROSS_ENCODER_GARBAGE = {
    "a pair of three": {"inputs": [["q", "d", "x"]]},
    # (In {"inputs": [["q", 3]]} MLflow's parser makes the 3 a string before the model sees it:
    # see the README's Safety section. Frames keep the types.)
    "a number in a pair": {"dataframe_split": {"columns": ["query", "document"], "data": [["q", 3]]}},
    "a number in a column dict": {"inputs": {"query": ["q"], "document": [3]}},
    "a null document": {"dataframe_split": {"columns": ["query", "document"], "data": [["q", None]]}},
    "one text": {"inputs": ["just a query"]},
    "three columns": {"dataframe_split": {"columns": ["a", "b", "c"], "data": [["q", "d", "e"]]}},
}


def test_serving_refuses_what_sentence_transformers_would_not_take(store, tiny_artifacts, monkeypatch):
    embedder_uri = store.register(tiny_artifacts["mean"], "emb").model_uri
    reranker_uri = store.register(tiny_artifacts["ce-sigmoid"], "ce").model_uri
    embedder, reranker = _pyfunc(store, embedder_uri, monkeypatch), _pyfunc(store, reranker_uri, monkeypatch)
    for name, payload in EMBEDDER_GARBAGE.items():
        status, body = _serve(embedder, payload)
        assert status == 400 and "Traceback" not in body, (name, status, body)
    for name, payload in CROSS_ENCODER_GARBAGE.items():
        status, body = _serve(reranker, payload)
        assert status == 400, (name, status, body)
    # the good requests still work, with the loader's numbers
    status, body = _serve(embedder, {"inputs": ["hello world", "a second text"]})
    assert status == 200
    np.testing.assert_allclose(json.loads(body)["predictions"],
                               load(tiny_artifacts["mean"]).encode(["hello world", "a second text"]), atol=1e-6)
    status, body = _serve(reranker, {"dataframe_split": {"columns": ["query", "document"], "data": [["q", "d"]]}})
    assert status == 200 and len(json.loads(body)["predictions"]) == 1
    assert _serve(embedder, {"inputs": []})[0] == 200  # an empty batch is an empty answer, as in ST


def test_the_pyfunc_refuses_a_resealed_registry_copy_before_importing_it(store, tiny_artifacts, tmp_path,
                                                                         monkeypatch):
    from mlflow.exceptions import MlflowException

    uri = store.register(tiny_artifacts["mean"], "resealed").model_uri
    stored = _stored_artifact(store, "resealed", "1")
    weights = bytearray((stored / "model.onnx.data").read_bytes())
    weights[-64:] = bytes(64)
    (stored / "model.onnx.data").write_bytes(bytes(weights))
    canary = tmp_path / "canary"
    with open(stored / "loader" / "__init__.py", "a") as f:
        f.write(f"\nopen({str(canary)!r}, 'w').write('stored loader code ran')\n")
    seal(stored, read_manifest(stored))  # every digest in the manifest holds again
    with pytest.raises(MlflowException, match="differs from the one registered"):
        _pyfunc(store, uri, monkeypatch)
    assert not canary.exists()


def test_the_pyfunc_refuses_added_or_changed_loader_code_before_importing_it(store, tiny_artifacts, tmp_path,
                                                                             monkeypatch):
    from mlflow.exceptions import MlflowException

    uri = store.register(tiny_artifacts["mean"], "added").model_uri
    stored = _stored_artifact(store, "added", "1")
    canary = tmp_path / "canary"
    (stored / "loader" / "sitecustom.py").write_text(f"open({str(canary)!r}, 'w').write('ran')\n")
    with pytest.raises(MlflowException, match="files not in the manifest"):
        _pyfunc(store, uri, monkeypatch)
    (stored / "loader" / "sitecustom.py").unlink()
    with open(stored / "loader" / "model.py", "a") as f:
        f.write(f"\nopen({str(canary)!r}, 'w').write('ran')\n")
    with pytest.raises(MlflowException, match=r"loader/model\.py: sha256 does not match"):
        _pyfunc(store, uri, monkeypatch)
    assert not canary.exists()


def _plant_and_reseal(artifact: Path, module: str) -> None:
    plant_pyc(artifact, module)
    edit_loader(artifact, "__init__")
    seal(artifact, read_manifest(artifact))  # every digest in the manifest holds again


# tampering -> (what it does to the stored artifact, why load("models:/...") refuses it)
STORE_TAMPERING = {"planted bytecode": (plant_pyc, "loader/__pycache__: missing"),
                   "an edited loader module": (edit_loader, "loader/model.py: size"),
                   "planted code, resealed": (_plant_and_reseal, "differs from the one registered")}


@pytest.mark.parametrize("tampering", STORE_TAMPERING)
def test_registered_versions_run_no_planted_code_on_either_loading_path(store, tiny_artifacts, tmp_path, monkeypatch,
                                                                        tampering):
    """A registered version's loader changed in the artifact store (the placeholder __pycache__
    file swapped for a folder with a pyc, or a .py edited), is refused by ``load("models:/...")``
    and by the pyfunc before any of it runs."""
    from mlflow.exceptions import MlflowException

    tamper, refused = STORE_TAMPERING[tampering]
    uri = store.register(tiny_artifacts["mean"], "planted").model_uri
    tamper(_stored_artifact(store, "planted", "1"), "model")
    monkeypatch.setenv(CANARY_ENV, str(tmp_path / "canary"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
    with pytest.raises(ArtifactIntegrityError, match=refused):
        load(uri)
    with pytest.raises(MlflowException, match="refusing the packaged artifact"):
        _pyfunc(store, uri, monkeypatch)
    assert not (tmp_path / "canary").exists()


def _register_process(artifact: Path, name: str, store, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "packager.cli", "register", str(artifact), "--name", name,
                           "--tracking-uri", store.tracking_uri], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_the_same_build_registered_by_jobs_at_the_same_instant_is_one_version(store, tiny_artifacts, tmp_path):
    """Four jobs pass the "already registered?" check together (a barrier holds each after its
    upload until all four got there), so all four create a version: exactly one stays."""
    jobs = 4
    env = {BARRIER_ENV: f"registry.uploaded:{tmp_path / 'meet'}:{jobs}"}
    with ThreadPoolExecutor(jobs) as pool:
        done = list(pool.map(lambda _: _register_process(tiny_artifacts["mean"], "raced", store, env), range(jobs)))
    assert [d.returncode for d in done] == [0] * jobs, [d.stderr for d in done]
    versions = _client(store).search_model_versions("name = 'raced'")
    assert len(versions) == 1 and versions[0].tags[VERIFIED_TAG] == "true"
    winner = f"models:/raced/{versions[0].version}"
    assert sum(f"registered {winner}" in d.stdout for d in done) == 1
    assert sum(f"already registered as {winner}" in d.stdout for d in done) == jobs - 1


@pytest.mark.parametrize("point", ["registry.uploaded", "registry.registered"])
def test_cleanup_removes_what_a_killed_registration_left(point, store, tiny_artifacts, capsys):
    killed = _register_process(tiny_artifacts["mean"], "killed", store, {"PACKAGER_FAILPOINTS": point})
    assert killed.returncode == -9
    client = _client(store)
    if point == "registry.registered":
        (version,) = client.search_model_versions("name = 'killed'")
        assert version.tags.get(VERIFIED_TAG) is None
        assert version.tags[OWNER_TAG].startswith(f"{socket.gethostname()}:")  # this machine, a process now gone
    else:
        client.create_registered_model("killed")  # cleanup takes a model name; the upload made none
    assert main(["cleanup", "killed", "--tracking-uri", store.tracking_uri]) == 0
    out = capsys.readouterr().out
    assert ("deleted unverified version 1" if point == "registry.registered" else "as failed") in out
    assert client.search_model_versions("name = 'killed'") == []
    experiment = client.get_experiment_by_name("chain-packager")
    assert client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") == []
    assert main(["cleanup", "killed", "--tracking-uri", store.tracking_uri]) == 0
    assert "nothing to clean up" in capsys.readouterr().out


def test_a_killed_pull_leaves_a_stage_that_the_next_pull_removes(store, tiny_artifacts, tmp_path):
    store.register(tiny_artifacts["mean"], "pulled")
    out = tmp_path / "pulled"
    argv = [sys.executable, "-m", "packager.cli", "pull", "models:/pulled/1", "--out", str(out), "--tracking-uri",
            store.tracking_uri]
    killed = subprocess.run(argv, env={**os.environ, "PACKAGER_FAILPOINTS": "registry.downloaded"},
                            capture_output=True, timeout=300)
    assert killed.returncode == -9
    assert [p.name.startswith(".stage-") for p in out.iterdir()] == [True]
    assert main(["pull", "models:/pulled/1", "--out", str(out), "--tracking-uri", store.tracking_uri]) == 0
    assert [p.name for p in out.iterdir()] == ["mean-onnx-fp32"]


def test_a_process_loads_a_version_once_and_checks_it_again_when_a_file_changes(store, tiny_artifacts, monkeypatch):
    """Spark's local mode loads the same downloaded version for every task: the second load
    reuses the first's checked model; a file changed in between (same size) is checked again
    and refused."""
    import mlflow
    from mlflow.artifacts import download_artifacts

    registered = store.register(tiny_artifacts["mean"], "cached")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
    local = Path(download_artifacts(registered.model_uri))
    first = mlflow.pyfunc.load_model(str(local)).unwrap_python_model().model
    assert mlflow.pyfunc.load_model(str(local)).unwrap_python_model().model is first
    (graph,) = [p for p in local.rglob("*.onnx")]
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(Exception, match=r"sha256|does not match"):
        mlflow.pyfunc.load_model(str(local))

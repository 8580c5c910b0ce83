"""The registry through a real `mlflow server` on loopback, backed by SQLite and by PostgreSQL:
build + register, promote, pull, list and load; eight CI jobs registering at once; a server that
refuses the upload; a torch-free service loading the champion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from mlflow_servers import have_postgres, mlflow_server, postgres
from packager.cli import main
from packager.registry.lineage import VERIFIED_TAG
from packager.registry.store import CANDIDATE_ALIAS
from packager.runtime import load
from packager.runtime.integrity import sha256_file

pytestmark = pytest.mark.slow

# Eight different builds of the same model name, as eight CI jobs would register them.
JOBS = ("mean", "mean-normalize", "cls-dense", "max-dense-layernorm-normalize", "mean_sqrt_len_tokens",
        "weightedmean", "lasttoken", "cls-mean-max-normalize")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"mlflow-{request.param}")
    if request.param == "sqlite":
        with mlflow_server(root / "server") as url:
            yield url
        return
    assert have_postgres(), "PostgreSQL is not installed; scripts/test.sh installs Debian's postgresql"
    with postgres() as database, mlflow_server(root / "server", database) as url:
        yield url


def _client(url):
    from mlflow import MlflowClient

    return MlflowClient(url, registry_uri=url)


def test_build_register_promote_pull_and_load(server, tiny_chains, tmp_path, monkeypatch, capsys):
    uri = ["--tracking-uri", server]
    report = tmp_path / "dist" / "mean-report" / "report.json"
    assert main(["build", str(tiny_chains["mean"]), "--out", str(tmp_path / "dist"), "--register", "flow",
                 "-q", *uri]) == 0
    registered = json.loads(report.read_text())["variants"][0]["registered"]
    assert registered["alias"] == CANDIDATE_ALIAS and registered["tracking_uri"] == server
    assert main(["promote", "flow", "--from-alias", CANDIDATE_ALIAS, "--alias", "champion", *uri]) == 0
    capsys.readouterr()
    assert main(["list", "flow", *uri]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == [registered["model_uri"].rsplit("/", 1)[1],
                                                                   "candidate,champion", "onnx"]
    assert main(["pull", "models:/flow@champion", "--out", str(tmp_path / "pulled"), *uri]) == 0
    local = tmp_path / "dist" / "mean-onnx-fp32"
    pulled = tmp_path / "pulled" / "mean-onnx-fp32"
    assert sha256_file(pulled / "manifest.json") == sha256_file(local / "manifest.json")

    texts = ["served through a tracking server", "another text"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    np.testing.assert_allclose(load("models:/flow@champion").encode(texts), load(local).encode(texts), atol=1e-6)
    import mlflow

    np.testing.assert_allclose(mlflow.pyfunc.load_model("models:/flow@champion").predict(texts),
                               load(local).encode(texts), atol=1e-6)


def test_eight_concurrent_jobs_get_eight_versions(server, tiny_artifacts, tmp_path):
    name = f"concurrent-{Path(server).name.replace(':', '-')}"

    def register(job: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "packager.cli", "register", str(tiny_artifacts[job]),
                               "--name", name, "--tracking-uri", server, "-q"], capture_output=True, text=True,
                              cwd=tmp_path)

    with ThreadPoolExecutor(len(JOBS)) as pool:
        results = list(pool.map(register, JOBS))
    assert [r.returncode for r in results] == [0] * len(JOBS), [r.stderr for r in results]

    client = _client(server)
    versions = client.search_model_versions(f"name = '{name}'")
    assert sorted(int(v.version) for v in versions) == list(range(1, len(JOBS) + 1))
    by_artifact = {v.tags["packager.artifact"]: v for v in versions}
    assert set(by_artifact) == {f"{job}-onnx-fp32" for job in JOBS}  # none lost, none overwritten
    assert all(v.tags[VERIFIED_TAG] == "true" for v in versions)
    candidate = client.get_model_version_by_alias(name, CANDIDATE_ALIAS)
    assert candidate.version in {v.version for v in versions}

    for job in JOBS:  # every version downloads intact and loads
        version = by_artifact[f"{job}-onnx-fp32"].version
        out = tmp_path / "pulled" / version
        assert main(["pull", f"models:/{name}/{version}", "--out", str(out), "--tracking-uri", server, "-q"]) == 0
        pulled = out / f"{job}-onnx-fp32"
        assert sha256_file(pulled / "manifest.json") == sha256_file(tiny_artifacts[job] / "manifest.json")
        texts = ["one of eight"]
        np.testing.assert_allclose(load(pulled).encode(texts), load(tiny_artifacts[job]).encode(texts), atol=1e-6)


def test_a_refused_upload_leaves_no_version(tiny_artifacts, tmp_path, capsys, monkeypatch):
    """The server cannot store artifacts (its destination lies under a regular file, which stops
    root too): the upload fails, the error says so and where the artifact is, and no version exists."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with mlflow_server(tmp_path / "server", artifacts=blocker / "artifacts") as url:
        artifact = tiny_artifacts["mean"]
        assert main(["register", str(artifact), "--name", "refused", "--tracking-uri", url]) == 7
        err = capsys.readouterr().err
        assert f"kept at {artifact}" in err and "Traceback" not in err
        assert _client(url).search_model_versions("name = 'refused'") == []


def test_a_torch_free_service_loads_the_champion(server, tiny_artifacts, serving_python, tmp_path):
    artifact = tiny_artifacts["router-dense"]
    uri = ["--tracking-uri", server]
    assert main(["register", str(artifact), "--name", "service", "-q", *uri]) == 0
    assert main(["promote", "service", "--from-alias", CANDIDATE_ALIAS, "--alias", "champion", "-q", *uri]) == 0
    code = """
import importlib.util, json, sys
import mlflow
model = mlflow.pyfunc.load_model("models:/service@champion")
texts = ["a query about packaging", "a second query"]
heavy = [m for m in ("torch", "transformers", "sentence_transformers", "packager") if importlib.util.find_spec(m)]
print(json.dumps({"heavy": heavy, "query": model.predict(texts, params={"verb": "encode_query"}).tolist(),
                  "document": model.predict(texts, params={"verb": "encode_document"}).tolist()}))
"""
    env = {**os.environ, "MLFLOW_TRACKING_URI": server, "PYTHONPATH": ""}
    done = subprocess.run([str(serving_python), "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["heavy"] == []
    model = load(artifact)
    texts = ["a query about packaging", "a second query"]
    np.testing.assert_allclose(result["query"], model.encode_query(texts), atol=1e-6)
    np.testing.assert_allclose(result["document"], model.encode_document(texts), atol=1e-6)

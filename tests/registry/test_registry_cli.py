"""The command line and the build over the registry's protocol, against the in-memory store
(``memory://``): listing, promoting, pulling, registering later, refusing what failed its gate.
And the contract both stores keep: the fake stands in for MLflow only where it behaves like it.
What only MLflow can prove (lineage in MLflow, pyfunc, tampered store copies, crashes, servers)
is in test_mlflow_store.py and test_server.py."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from packager.cli import main
from packager.errors import RegistryError
from packager.registry import open_store
from packager.registry.mlflow_store import MlflowStore
from packager.registry.store import CANDIDATE_ALIAS
from packager.runtime import load
from packager.runtime.integrity import sha256_file


@pytest.fixture
def store():
    """A fresh in-memory registry, as the CLI reaches it by its URI."""
    return open_store(f"memory://{uuid.uuid4().hex}")


def _aliases(store, name: str) -> set[str]:
    return {alias for v in store.versions(name) for alias in v.aliases}


def test_promote_pull_and_list_through_the_cli(store, tiny_artifacts, tmp_path, capsys):
    uri = ["--tracking-uri", store.tracking_uri]
    artifact = tiny_artifacts["mean"]
    assert main(["register", str(artifact), "--name", "emb", *uri]) == 0
    assert main(["register", str(tiny_artifacts["cls-dense"]), "--name", "emb", *uri]) == 0
    assert main(["promote", "emb", "--from-alias", CANDIDATE_ALIAS, "--alias", "champion", *uri]) == 0
    assert main(["promote", "emb", "--version", "1", "--alias", "previous", *uri]) == 0
    capsys.readouterr()

    assert main(["list", "emb", *uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["version", "aliases", "format", "precision"]
    assert lines[1].split()[:4] == ["2", "candidate,champion", "onnx", "fp32"]
    assert lines[2].split()[:2] == ["1", "previous"] and "passed" in lines[2]
    assert main(["list", "emb", "--json", *uri]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(v["version"], v["verified"]) for v in listed] == [("2", True), ("1", True)]
    assert listed[0]["tags"]["packager.artifact"] == "cls-dense-onnx-fp32"

    out = tmp_path / "pulled"
    assert main(["pull", "models:/emb@champion", "--out", str(out), *uri]) == 0
    pulled = out / "cls-dense-onnx-fp32"
    assert sha256_file(pulled / "manifest.json") == sha256_file(tiny_artifacts["cls-dense"] / "manifest.json")
    assert [p.name for p in out.iterdir()] == [pulled.name]  # no temporary directories left
    texts = ["pulled artifacts load without the registry"]
    np.testing.assert_allclose(load(pulled).encode(texts), load(tiny_artifacts["cls-dense"]).encode(texts), atol=1e-6)

    assert main(["promote", "emb", "--version", "9", "--alias", "champion", *uri]) == 2
    assert main(["list", "nothing-here", *uri]) == 7
    assert "no registered model named 'nothing-here'" in capsys.readouterr().err


def test_promote_refuses_a_version_that_failed_its_gate(store, tiny_chains, tmp_path, capsys):
    out = tmp_path / "dist"
    assert main(["build", str(tiny_chains["mean"]), "--out", str(out), "--gate", "fp32.min_cosine=1.5",
                 "--allow-parity-failure", "--register", "gated", "--tracking-uri", store.tracking_uri, "-q"]) == 0
    capsys.readouterr()
    assert main(["promote", "gated", "--from-alias", CANDIDATE_ALIAS, "--alias", "champion",
                 "--tracking-uri", store.tracking_uri]) == 7
    assert "did not pass its parity gate" in capsys.readouterr().err
    assert "champion" not in _aliases(store, "gated")


def test_register_later_verifies_the_artifact_first(store, copy_artifact, capsys):
    artifact = copy_artifact("mean")
    (artifact / "tokenizer.json").write_text((artifact / "tokenizer.json").read_text().replace("[UNK]", "[UNK2]"))
    assert main(["register", str(artifact), "--name", "later", "--tracking-uri", store.tracking_uri]) == 8
    assert "tokenizer.json: " in capsys.readouterr().err
    with pytest.raises(RegistryError, match="no registered model"):
        store.versions("later")


@pytest.mark.parametrize("kind", ["memory", "mlflow"])
def test_both_stores_keep_the_same_contract(kind, tiny_artifacts, tmp_path):
    """Register, the same build again, a forced new version, promote, pull: the same answers."""
    store = open_store(f"memory://{uuid.uuid4().hex}") if kind == "memory" else \
        MlflowStore(f"sqlite:///{tmp_path / 'mlflow.db'}")
    first = store.register(tiny_artifacts["mean"], "contract")
    again = store.register(tiny_artifacts["mean"], "contract")
    forced = store.register(tiny_artifacts["mean"], "contract", force_new_version=True)
    assert [(r.version, r.existing, r.alias) for r in (first, again, forced)] == [
        ("1", False, CANDIDATE_ALIAS), ("1", True, None), ("2", False, CANDIDATE_ALIAS)]
    promoted = store.promote("contract", "champion", from_alias=CANDIDATE_ALIAS)
    assert (promoted.version, promoted.model_uri) == ("2", "models:/contract@champion")
    pulled = store.pull("models:/contract@champion", tmp_path / "pulled")
    assert sha256_file(pulled / "manifest.json") == sha256_file(tiny_artifacts["mean"] / "manifest.json")
    listed = store.versions("contract")
    assert [(v.version, v.aliases, v.verified, v.parity_status) for v in listed] == [
        ("2", ("candidate", "champion"), True, "passed"), ("1", (), True, "passed")]
    assert store.cleanup("contract") == []

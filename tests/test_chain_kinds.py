"""Every chain kind through the CLI (tiny_artifacts), then the torch-free loader against
sentence-transformers' own verbs on inputs the parity gate did not see: batches and a batch of
one, pairs, left padding, texts beyond max_seq_length."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import OPENVINO, TINY_CHAINS
from packager.publish import import_loader
from packager.runtime import UnsupportedVerbError
from packager.runtime.manifest import read_manifest
from packager.validators.texts import UNICODE_PROBES, real_sentences

LONG = " ".join(real_sentences()[900:960])  # far beyond every tiny chain's max_seq_length
UNSEEN = [s.upper() for s in real_sentences()[-30:]] + [LONG, "", UNICODE_PROBES[7], "x"]
QUERIES = [s for s in real_sentences()[1200:1300] if len(s.split()) < 9][:3]
PAIRS = [(q, d) for q in QUERIES for d in UNSEEN[:6]] + [(QUERIES[0], LONG), (LONG, QUERIES[1]), ("", "")]


def _kind(name: str, artifacts) -> str:
    return read_manifest(artifacts[name]).chain_kind.value


def _load(name, tiny_chains, artifacts):
    """The artifact through its own loader, and the reference sentence-transformers model."""
    import sentence_transformers as st

    artifact = artifacts[name]
    model = import_loader(artifact).load(artifact)
    kind = read_manifest(artifact).chain_kind.value
    reference = getattr(st, kind)(str(tiny_chains[name]), device="cpu", trust_remote_code=True)
    return model, reference


def _names(kind: str) -> list[str]:
    prefixes = {"SentenceTransformer": ("ce-", "splade", "sparse", "router-sparse", "csr", "mv-"),
                "CrossEncoder": ("ce-",), "SparseEncoder": ("splade", "sparse", "router-sparse", "csr")}
    if kind == "SentenceTransformer":
        return [n for n in TINY_CHAINS if not n.startswith(prefixes[kind])]
    return [n for n in TINY_CHAINS if n.startswith(prefixes[kind])]


def _formats(names: list[str]) -> list[tuple[str, str]]:
    """Every chain as ONNX; those of conftest.OPENVINO (one of each kind and shape) as OpenVINO too."""
    return [(name, "onnx") for name in names] + [(name, "openvino") for name in names if name in OPENVINO]


@pytest.fixture
def built(fmt, tiny_artifacts, tiny_openvino):
    """The tiny artifacts of one format."""
    return tiny_artifacts if fmt == "onnx" else tiny_openvino


@pytest.mark.parametrize("name,fmt", _formats(sorted(TINY_CHAINS)))
def test_every_chain_passes_its_fp32_gate(name, fmt, built):
    manifest = read_manifest(built[name])
    assert manifest.parity.status.value == "passed", manifest.parity.failures
    assert manifest.parity.gate and manifest.parity.metrics
    assert manifest.recipe.name == f"{manifest.format.value}-fp32" and manifest.calibration is None


@pytest.mark.parametrize("name,fmt", _formats(_names("SentenceTransformer")))
def test_dense_verbs_match_sentence_transformers(name, fmt, tiny_chains, built):
    model, reference = _load(name, tiny_chains, built)
    assert type(model).__name__ == "EmbeddingModel"  # the artifact's own copy of the class
    for verb in ("encode", "encode_query", "encode_document"):
        got = getattr(model, verb)(UNSEEN, batch_size=7)
        want = getattr(reference, verb)(UNSEEN, batch_size=7)
        np.testing.assert_allclose(got, want, atol=3e-5, err_msg=verb)
        np.testing.assert_allclose(getattr(model, verb)(UNSEEN[0]), want[0], atol=3e-5, err_msg=f"{verb}, one text")
    a, b = model.encode(UNSEEN[:4]), model.encode_document(UNSEEN[4:9])
    np.testing.assert_allclose(model.similarity(a, b), reference.similarity(a, b).numpy(), atol=1e-5)


@pytest.mark.parametrize("name,fmt", _formats(_names("SparseEncoder")))
def test_sparse_verbs_match_sentence_transformers(name, fmt, tiny_chains, built):
    model, reference = _load(name, tiny_chains, built)
    assert type(model).__name__ == "SparseEncoderModel"
    for verb in ("encode", "encode_query", "encode_document"):
        got = getattr(model, verb)(UNSEEN, batch_size=7)
        want = getattr(reference, verb)(UNSEEN, batch_size=7, convert_to_sparse_tensor=False).numpy()
        np.testing.assert_allclose(got.toarray(), want, rtol=1e-5, atol=3e-5, err_msg=verb)  # sum pooling reaches ~40
        assert [len(e) for e in got] == list(np.count_nonzero(want, axis=1)), verb
        one = getattr(model, verb)(UNSEEN[0])
        np.testing.assert_allclose(one.toarray(), want[0], rtol=1e-5, atol=3e-5)
        assert one.indices.dtype == np.int64 and one.values.dtype == np.float32
    documents = model.encode_document(UNSEEN[:5])
    reference_documents = reference.encode_document(UNSEEN[:5])
    np.testing.assert_allclose(model.similarity(documents, documents),
                               reference.similarity(reference_documents, reference_documents).to_dense().numpy(),
                               rtol=1e-4, atol=1e-4)
    if read_manifest(built[name]).sparse.vocabulary:  # token names: the same top tokens as decode()
        got = [token for token, _ in model.decode(documents[0], top_k=5)]
        want = [token for token, _ in reference.decode(reference_documents[0], top_k=5)]
        assert got == want


@pytest.mark.parametrize("name,limits", [("splade-top16", (None, 4, 40)), ("csr", (None, 4, 8))])
def test_max_active_dims_matches_sentence_transformers(name, limits, tiny_chains, tiny_artifacts):
    model, reference = _load(name, tiny_chains, tiny_artifacts)
    for limit in limits:
        got = model.encode(UNSEEN, max_active_dims=limit).toarray()
        want = reference.encode(UNSEEN, max_active_dims=limit, convert_to_sparse_tensor=False).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=3e-5, err_msg=str(limit))
        assert np.count_nonzero(got, axis=1).max() <= (limit or model.manifest.sparse.max_active_dims or got.shape[1])


def test_a_sparse_autoencoder_cannot_return_more_than_its_k(tiny_artifacts):
    from packager.runtime import InvalidInputError, load

    model = load(tiny_artifacts["csr"])
    assert model.manifest.sparse.max_active_dims_ceiling == 8 and model.manifest.sparse.vocabulary is None
    with pytest.raises(InvalidInputError, match="keeps 8 dimensions"):
        model.encode(UNSEEN, max_active_dims=16)


@pytest.mark.parametrize("name,fmt", _formats(_names("CrossEncoder")))
def test_cross_encoder_verbs_match_sentence_transformers(name, fmt, tiny_chains, built):
    model, reference = _load(name, tiny_chains, built)
    assert type(model).__name__ == "CrossEncoderModel"
    np.testing.assert_allclose(model.predict(PAIRS, batch_size=5), reference.predict(PAIRS, batch_size=5), atol=3e-5)
    np.testing.assert_allclose(model.predict(PAIRS[0]), reference.predict(PAIRS[0]), atol=3e-5)
    np.testing.assert_allclose(model.predict(PAIRS, prompt="Score this: "),
                               reference.predict(PAIRS, prompt="Score this: "), atol=3e-5)
    if model.manifest.scoring.num_labels == 1:
        got = model.rank(QUERIES[0], UNSEEN[:8], top_k=5, return_documents=True)
        want = reference.rank(QUERIES[0], UNSEEN[:8], top_k=5, return_documents=True)
        assert [r["corpus_id"] for r in got] == [r["corpus_id"] for r in want]
        assert [r["text"] for r in got] == [r["text"] for r in want]
        np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want], atol=3e-5)
    else:
        with pytest.raises(Exception, match="one label") as error:  # the artifact's own UnsupportedVerbError class
            model.rank(QUERIES[0], UNSEEN[:3])
        assert type(error.value).__name__ == "UnsupportedVerbError"
        np.testing.assert_allclose(model.predict(PAIRS, apply_softmax=True),
                                   reference.predict(PAIRS, apply_softmax=True), atol=3e-5)


def test_cross_encoder_declared_activations_are_recorded(tiny_artifacts):
    activations = {name: read_manifest(tiny_artifacts[name]).scoring for name in _names("CrossEncoder")}
    assert activations["ce-sigmoid"].activation.value == "sigmoid"
    assert (activations["ce-3-labels"].activation.value, activations["ce-3-labels"].num_labels) == ("identity", 3)
    assert activations["ce-3-softmax"].activation.value == "softmax"


def test_left_padding_is_recorded_and_used(tiny_artifacts):
    for name in ("qwen-lasttoken", "ce-logit-score"):
        assert read_manifest(tiny_artifacts[name]).routes[0].tokenizer.padding_side.value == "left", name


def test_routers_have_one_graph_per_route_and_verbs_pick_them(tiny_artifacts):
    sparse = read_manifest(tiny_artifacts["router-sparse"])
    assert {r.name for r in sparse.routes} == {"query", "document"}
    assert {verb: spec.route for verb, spec in sparse.verbs.items()} == {
        "encode": "document", "encode_query": "query", "encode_document": "document"}
    assert sparse.route("query").inputs == ("input_ids", "attention_mask")
    assert sparse.route("query").tokenizer.add_special_tokens is False
    assert sparse.route("document").graph != sparse.route("query").graph
    dense = read_manifest(tiny_artifacts["router-dense"])
    assert {r.tokenizer.max_length for r in dense.routes} == {32, 48}


def test_verbs_a_chain_does_not_have_raise_clearly(tiny_artifacts):
    from packager.runtime import load

    cross_encoder, embedder = load(tiny_artifacts["ce-sigmoid"]), load(tiny_artifacts["mean"])
    with pytest.raises(UnsupportedVerbError, match=r"encode.*CrossEncoder.*predict, rank"):
        cross_encoder.encode(["text"])
    with pytest.raises(UnsupportedVerbError, match=r"predict.*SentenceTransformer"):
        embedder.predict([("a", "b")])
    with pytest.raises(UnsupportedVerbError, match="decode"):
        embedder.decode(None)


def test_custom_modules_need_trust_and_then_are_compiled(tiny_chains, tiny_artifacts, tmp_path):
    from packager.cli import main

    assert main(["build", str(tiny_chains["custom"]), "--out", str(tmp_path)]) == 4
    manifest = read_manifest(tiny_artifacts["custom"])
    assert [m.kind.value for m in manifest.modules] == ["Transformer", "Pooling", "custom"]


def test_an_untraceable_custom_module_is_named(backbones, tmp_path, capsys):
    import tiny_models
    from packager.cli import main

    chain = tiny_models.save_custom(tmp_path / "chain", backbones.bert, traceable=False)
    assert main(["build", str(chain), "--out", str(tmp_path / "dist"), "--trust-remote-code", "-q"]) == 5
    error = capsys.readouterr().err
    assert "Custom module(s) '2' (gate.Gate) must be traceable" in error and len(error.splitlines()) < 20
    assert not any((tmp_path / "dist").glob("*-onnx-fp32"))


def test_a_chain_the_kind_cannot_compile_is_refused_naming_the_module(tiny_chains, tmp_path):
    import json
    import shutil

    from packager.cli import main

    chain = shutil.copytree(tiny_chains["splade-max"], tmp_path / "chain")
    config = json.loads((chain / "config_sentence_transformers.json").read_text())
    config["model_type"] = "SentenceTransformer"
    (chain / "config_sentence_transformers.json").write_text(json.dumps(config))
    assert main(["build", str(chain), "--out", str(tmp_path / "dist")]) == 4
    assert not (tmp_path / "dist").exists()

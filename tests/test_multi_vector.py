"""MultiVectorEncoder (late interaction): the torch-free loader against sentence-transformers'
encode_query, encode_document and MaxSim on text the gate did not see; int8 and fp16 variants
behind their gates; the pyfunc; and the modules that are refused with their reason."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap

import numpy as np
import pytest

from packager.cli import main
from packager.publish import import_loader
from packager.runtime import InvalidInputError, load
from packager.runtime.manifest import read_manifest
from packager.validators.texts import real_sentences

MULTI_VECTOR = ["mv-skiplist", "mv-expansion", "mv-normalize"]
LONG = " ".join(real_sentences()[900:960])  # beyond every length of the tiny chains
QUERIES = [*[s for s in real_sentences()[1200:1300] if len(s.split()) < 9][:4], "what?!", ""]
DOCUMENTS = [s.upper() for s in real_sentences()[-12:]] + [LONG, "", "...", "x"]


@pytest.fixture(scope="module")
def references(tiny_chains):
    from sentence_transformers import MultiVectorEncoder

    return {name: MultiVectorEncoder(str(tiny_chains[name]), device="cpu") for name in MULTI_VECTOR}


def _close(got: list[np.ndarray], want: list) -> None:
    assert [len(g) for g in got] == [len(w) for w in want]  # the same tokens kept, text by text
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
@pytest.mark.parametrize("name", MULTI_VECTOR)
def test_multi_vector_verbs_match_sentence_transformers(name, fmt, references, tiny_artifacts, tiny_openvino):
    artifact = (tiny_artifacts if fmt == "onnx" else tiny_openvino)[name]
    model, reference = import_loader(artifact).load(artifact), references[name]
    queries = model.encode_query(QUERIES, batch_size=4)
    documents = model.encode_document(DOCUMENTS, batch_size=4)
    want_queries = reference.encode_query(QUERIES, batch_size=4, convert_to_numpy=True)
    want_documents = reference.encode_document(DOCUMENTS, batch_size=4, convert_to_numpy=True)
    _close(queries, want_queries)
    _close(documents, want_documents)
    _close(model.encode(DOCUMENTS[:3]), reference.encode(DOCUMENTS[:3], convert_to_numpy=True))
    single = model.encode_query(QUERIES[0])  # one text in, one matrix out
    np.testing.assert_allclose(single, want_queries[0], rtol=1e-4, atol=1e-5)
    want = reference.similarity(want_queries, want_documents).numpy()
    np.testing.assert_allclose(model.similarity(queries, documents), want, rtol=1e-4, atol=1e-4)
    pairs = reference.similarity_pairwise(want_queries, want_documents[: len(QUERIES)]).numpy()
    np.testing.assert_allclose(model.similarity_pairwise(queries, documents[: len(QUERIES)]), pairs, rtol=1e-4,
                               atol=1e-4)
    normalized = model.encode_document(DOCUMENTS[:2], normalize_embeddings=True)
    _close(normalized, reference.encode_document(DOCUMENTS[:2], normalize_embeddings=True, convert_to_numpy=True))


def test_masking_and_expansion_are_what_the_chains_declare(tiny_artifacts):
    skiplist = load(tiny_artifacts["mv-skiplist"])
    # punctuation is dropped from documents only (ColBERT's skiplist)
    assert len(skiplist.encode_query("what, then.")) == len(skiplist.encode_query("what then")) + 2
    assert len(skiplist.encode_document("what, then.")) == len(skiplist.encode_document("what then"))
    expansion = load(tiny_artifacts["mv-expansion"])
    verbs = expansion.manifest.verbs
    assert verbs["encode_query"].expansion.length == 20 and verbs["encode_query"].max_length == 28
    assert verbs["encode_document"].max_length == 40 and verbs["encode_document"].expansion is None
    assert [len(q) for q in expansion.encode_query(["a", LONG])] == [20, 28]  # expanded up to 20, cut at 28
    # cut at 40 tokens, less the ':' of the prompt "passage: ", which the skiplist drops
    assert len(expansion.encode_document("many words " * 40)) == 39
    assert expansion.manifest.similarity.value == "maxsim"
    assert load(tiny_artifacts["mv-normalize"]).manifest.similarity.value == "meanmaxsim"
    with pytest.raises(InvalidInputError, match="not text"):
        skiplist.similarity("a query", "a document")
    with pytest.raises(InvalidInputError, match="as many queries as documents"):
        skiplist.similarity_pairwise(skiplist.encode_query(["a", "b"]), skiplist.encode_document(["c"]))


INT8_GATE = {"token_mean_cosine", "score_spearman_mean", "top1_agreement"}


def _agrees_with_fp32(artifact, fp32) -> None:
    """Real queries against real documents: the same best document as the fp32 artifact, mostly."""
    queries, documents = real_sentences()[:8], real_sentences()[100:140]
    want = fp32.similarity(fp32.encode_query(queries), fp32.encode_document(documents))
    model = load(artifact)
    scores = model.similarity(model.encode_query(queries), model.encode_document(documents))
    assert scores.shape == want.shape
    assert np.mean(np.argmax(scores, axis=1) == np.argmax(want, axis=1)) >= 0.75


def test_onnx_int8_passes_its_ranking_gate(tiny_chains, tiny_artifacts, tmp_path):
    out = tmp_path / "dist"
    assert main(["build", str(tiny_chains["mv-normalize"]), "--out", str(out), "--format", "onnx", "--precision",
                 "int8", "-q", "--no-register"]) == 0
    manifest = read_manifest(out / "mv-normalize-onnx-int8")
    assert manifest.parity.status.value == "passed" and set(manifest.parity.gate) == INT8_GATE
    _agrees_with_fp32(out / "mv-normalize-onnx-int8", load(tiny_artifacts["mv-normalize"]))


@pytest.mark.slow  # about 25 s of builds: every recipe, each gated (the default run builds ONNX int8 above)
def test_every_int8_recipe_and_fp16_pass_their_gates_and_auto_picks_one(tiny_chains, tiny_artifacts, tmp_path):
    from jsonschema import Draft202012Validator

    from packager.reports import SCHEMA_FILE

    out = tmp_path / "dist"
    chain = str(tiny_chains["mv-normalize"])
    assert main(["build", chain, "--out", str(out), "--format", "onnx", "--precision", "auto", "-q",
                 "--no-register"]) == 0
    report = json.loads((out / "mv-normalize-report" / "report.json").read_text())
    assert not list(Draft202012Validator(json.loads(SCHEMA_FILE.read_text())).iter_errors(report))
    (auto,) = report["variants"]
    # auto gated both ONNX int8 recipes; each passed the int8 gate on its own
    assert {(a["recipe"], a["passed"]) for a in auto["attempts"]} == {("onnx-int8-dynamic", True),
                                                                       ("onnx-int8-static-qdq", True)}
    assert main(["build", chain, "--out", str(out), "--format", "openvino", "--precision", "int8,fp16", "-q",
                 "--no-register"]) == 0
    expected = {"int8": INT8_GATE, "fp16": {"token_min_cosine", "token_mean_cosine", "score_spearman_min"}}
    for variant in ("onnx-int8", "openvino-int8", "openvino-fp16"):
        manifest = read_manifest(out / f"mv-normalize-{variant}")
        assert manifest.parity.status.value == "passed", (variant, manifest.parity.failures)
        assert set(manifest.parity.gate) == expected[manifest.precision.value]
    for variant in ("openvino-int8", "openvino-fp16"):
        _agrees_with_fp32(out / f"mv-normalize-{variant}", load(tiny_artifacts["mv-normalize"]))


def test_the_pyfunc_returns_one_list_of_vectors_per_text(tiny_artifacts, tmp_path, monkeypatch):
    import mlflow
    from mlflow.types.schema import Array

    from packager.registry.mlflow_store import MlflowStore

    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    store = MlflowStore(f"sqlite:///{tmp_path / 'registry' / 'mlflow.db'}")
    artifact = tiny_artifacts["mv-expansion"]
    registered = store.register(artifact, "tiny-colbert")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(registered.model_uri)
    output = pyfunc.metadata.signature.outputs.inputs[0]
    assert output.type == Array(Array(mlflow.types.DataType.float))
    model = load(artifact)
    texts = ["late interaction, token by token", "a second text"]
    for verb in ("encode_query", "encode_document"):
        rows = pyfunc.predict(texts, params={"verb": verb})
        expected = getattr(model, verb)(texts)
        assert len(rows) == 2
        for row, want in zip(rows, expected, strict=True):
            np.testing.assert_allclose(np.array(row, dtype=np.float32), want, atol=1e-6)


def test_multi_vector_artifacts_load_and_score_without_torch(runtime_python, tiny_artifacts, references, tmp_path):
    artifact = tiny_artifacts["mv-expansion"]
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(artifact)!r})
        from loader import load
        model = load({str(artifact)!r})
        queries, documents = model.encode_query({QUERIES!r}), model.encode_document({DOCUMENTS!r})
        print(json.dumps({{"counts": [len(q) for q in queries], "scores": model.similarity(queries, documents).tolist(),
                           "torch": "torch" in sys.modules}}))
    """)
    result = subprocess.run([str(runtime_python), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    reference = references["mv-expansion"]
    want_queries = reference.encode_query(QUERIES, convert_to_numpy=True)
    assert data["counts"] == [len(q) for q in want_queries] and not data["torch"]
    want = reference.similarity(want_queries, reference.encode_document(DOCUMENTS, convert_to_numpy=True)).numpy()
    np.testing.assert_allclose(np.array(data["scores"]), want, rtol=1e-4, atol=1e-4)


def test_token_pooling_and_a_misplaced_mask_are_refused_with_their_reason(tiny_chains, tmp_path, capsys):
    pooled = shutil.copytree(tiny_chains["mv-normalize"], tmp_path / "pooled")
    modules = json.loads((pooled / "modules.json").read_text())
    (pooled / "4_HierarchicalTokenPooling").mkdir()
    (pooled / "4_HierarchicalTokenPooling" / "config.json").write_text(json.dumps({"pool_factor": 2}))
    pooling = "sentence_transformers.multi_vector_encoder.modules.token_pooling.HierarchicalTokenPooling"
    modules.append({"idx": 4, "name": "4", "path": "4_HierarchicalTokenPooling", "type": pooling})
    (pooled / "modules.json").write_text(json.dumps(modules))
    assert main(["build", str(pooled), "--out", str(tmp_path / "dist")]) == 4  # refused before any work
    err = capsys.readouterr().err
    assert "HierarchicalTokenPooling" in err and "Ward linkage" in err
    assert "MultiVectorMask is compiled as the last module" in err  # the pooling follows it here
    assert not (tmp_path / "dist").exists()

    dense = shutil.copytree(tiny_chains["mv-skiplist"], tmp_path / "as-dense")
    config = json.loads((dense / "config_sentence_transformers.json").read_text())
    (dense / "config_sentence_transformers.json").write_text(json.dumps({**config,
                                                                         "model_type": "SentenceTransformer"}))
    assert main(["build", str(dense), "--out", str(tmp_path / "dist")]) == 4
    assert "a MultiVectorMask belongs to a MultiVectorEncoder" in capsys.readouterr().err
    # a SentenceTransformer's extra token output: a usage error for this kind, before any work
    assert main(["build", str(tiny_chains["mv-skiplist"]), "--token-embeddings", "--out", str(tmp_path / "dist")]) == 2
    assert "returns its token embeddings already" in capsys.readouterr().err
    assert not (tmp_path / "dist").exists()


@pytest.mark.parametrize("settings", [
    {"skiplist_words": [",", "."]},
    {"skiplist_words": [",", "."], "skiplist_tasks": ["query", "document"]},
    {"skiplist_words": [","], "keep_only_token_ids": [7, 8, 9, 10, 11, 12]},
    {},
])
def test_the_exported_mask_step_is_multi_vector_masks_arithmetic_for_every_task(settings, references):
    """ScoringMasks (which the exporter can lower) against MultiVectorMask.forward itself, on
    random ids with padding and expansion positions, for each task sentence-transformers passes."""
    import torch
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    from packager.chain.st_internals import skiplist_ids
    from packager.chain.steps import SCORING_MASKS, ScoringMasks
    from packager.runtime.text import EXPANSION_POSITIONS

    mask = MultiVectorMask(**settings)
    mask.resolve_with_tokenizer(references["mv-skiplist"].tokenizer)
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 40, (6, 12), generator=generator)
    if (skip := skiplist_ids(mask)) is not None:
        ids[:, 1::3] = skip[0]  # skiplisted ids for sure
    attention = (torch.arange(12) < torch.tensor([12, 9, 5, 1, 7, 12]).unsqueeze(1)).long()
    positions = (attention == 0) & (torch.arange(12) < 10)
    features = {"input_ids": ids, "attention_mask": attention, EXPANSION_POSITIONS: positions}
    masks = ScoringMasks(mask)(dict(features))
    for task in ("query", "document", None):
        want = mask(dict(features), task=task)["attention_mask"]
        assert torch.equal(masks[SCORING_MASKS[task or "document"]], want.bool()), task
    assert torch.equal(masks[SCORING_MASKS["query"]], attention.bool() | positions) == ("query" not in
                                                                                        mask.skiplist_tasks)
    # the document mask drops something exactly when the module has a skiplist or an allow-list
    assert torch.equal(masks[SCORING_MASKS["document"]], attention.bool()) == (settings == {})


def test_maxsim_is_sentence_transformers_maxsim_at_the_edges():
    """The runtime's MaxSim against sentence-transformers' on queries and documents without tokens,
    no queries, one matrix, and padded arrays; bad inputs are input errors."""
    import torch
    from sentence_transformers.util import similarity as st

    from packager.runtime.similarity import maxsim, maxsim_pairwise

    rng = np.random.default_rng(0)
    queries = [rng.normal(size=(5, 8)), np.zeros((0, 8)), rng.normal(size=(1, 8))]
    documents = [rng.normal(size=(7, 8)), np.zeros((0, 8)), rng.normal(size=(3, 8))]
    queries, documents = [q.astype(np.float32) for q in queries], [d.astype(np.float32) for d in documents]

    def tensors(items):
        return [torch.from_numpy(i) for i in items]

    for mean, full, pairwise in ((False, st.maxsim, st.maxsim_pairwise), (True, st.mean_maxsim,
                                                                         st.mean_maxsim_pairwise)):
        cases = [(queries, documents), (queries, documents[1:2]), (queries[:0], documents), (queries[0], documents[2])]
        for a, b in cases:
            want = full(tensors(a) if isinstance(a, list) else torch.from_numpy(a),
                        tensors(b) if isinstance(b, list) else torch.from_numpy(b)).numpy()
            got = maxsim(a, b, mean=mean)
            assert got.dtype == np.float32 and got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(maxsim_pairwise(queries, documents, mean=mean),
                                   pairwise(tensors(queries), tensors(documents)).numpy(), rtol=1e-5, atol=1e-5)
    padded = np.zeros((2, 7, 8), np.float32)  # sentence-transformers takes all-zero rows as padding
    padded[0, :5], padded[1, :1] = queries[0], queries[2]
    np.testing.assert_allclose(maxsim(padded, documents), maxsim([queries[0], queries[2]], documents))
    for bad in (None, 5, "a text", [np.ones(8)], [np.ones((2, 8)), np.ones((2, 4))], np.ones((2, 2, 2, 2))):
        with pytest.raises(InvalidInputError):
            maxsim(bad, documents)

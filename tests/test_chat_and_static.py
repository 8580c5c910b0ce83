"""The chain families of chat templates and static embeddings (issue 16): what the manifest
resolves per verb, the runtime's input exactly as sentence-transformers makes it (the rendered
template, truncation and the suffix restore, per-task lengths, query expansion), the sliced
language-model head, a Router after a shared Transformer, and the static embedder's int8 and fp16
variants. test_chain_kinds compares every verb's output with sentence-transformers'."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from int8_kernels import assert_saturation_free

from packager.cli import main
from packager.exporters import openvino as openvino_recipes
from packager.runtime import load
from packager.runtime.enums import Int8Arithmetic
from packager.runtime.manifest import read_manifest
from packager.runtime.text import TextEncoder
from packager.validators.texts import UNICODE_PROBES, real_sentences

LONG = " ".join(real_sentences()[900:915])  # past every fixture's longest truncation
PROMPT = "Given a question, find passages that answer it"
# Inputs at and around the truncation boundaries of the rendered templates, empty sides, other scripts.
TEXTS = ["", "x", real_sentences()[3], LONG, UNICODE_PROBES[7], " ".join(real_sentences()[10:14])]
PAIRS = [("", ""), (real_sentences()[5], ""), ("", real_sentences()[6]), (real_sentences()[7], LONG),
         (LONG, real_sentences()[8]), (UNICODE_PROBES[3], UNICODE_PROBES[7])]


def _ids(features, row: int) -> list[int]:
    return features["input_ids"][row][features["attention_mask"][row].bool()].tolist()


@pytest.mark.parametrize("name,cls", [("ce-chat", "CrossEncoder"), ("ce-chat-classifier", "CrossEncoder"),
                                      ("shared-router", "SentenceTransformer"),
                                      ("query-expansion", "SentenceTransformer")])
def test_the_runtime_tokenizes_every_verb_as_sentence_transformers_does(name, cls, tiny_chains, tiny_artifacts):
    """Token for token, for every verb, with and without a prompt: the rendered template, its
    truncation with the suffix restored, per-task lengths and query expansion."""
    import sentence_transformers as st

    reference = getattr(st, cls)(str(tiny_chains[name]), device="cpu")
    model = load(tiny_artifacts[name])
    inputs = PAIRS if cls == "CrossEncoder" else TEXTS
    truncated = 0
    for verb, spec in model.manifest.verbs.items():
        encoder = model._runners[spec.route].text
        max_length = spec.max_length or encoder.spec.max_length
        for prompt in (None, PROMPT):
            tokens, _ = encoder.encode(inputs, max_length=max_length, prompt=prompt, task=spec.task)
            padded = encoder.pad(tokens, expansion=spec.expansion)
            want = reference[0].preprocess(inputs, prompt=prompt, task=spec.task)
            np.testing.assert_array_equal(padded["input_ids"], want["input_ids"].numpy(), err_msg=f"{verb} {prompt}")
            np.testing.assert_array_equal(padded["attention_mask"], want["attention_mask"].numpy())
            truncated += sum(len(t.ids) == max_length for t in tokens)
    assert truncated  # the boundary was crossed: truncation (and the suffix restore) were compared


def test_a_truncated_render_ends_with_the_template_tail_and_the_restore_is_needed(tiny_chains, tiny_artifacts):
    import sentence_transformers as st

    reference = st.CrossEncoder(str(tiny_chains["ce-chat"]), device="cpu")
    model = load(tiny_artifacts["ce-chat"])
    encoder = model._runners["default"].text
    pairs = [(real_sentences()[7], LONG)]
    max_length = encoder.spec.max_length
    restored = encoder.encode(pairs, max_length=max_length, prompt=PROMPT)[0][0].ids
    # the template's last line (jinja2 drops a template's final newline, as transformers renders it)
    tail = reference[0].tokenizer.encode("<|im_end|>\n<|im_start|>assistant", add_special_tokens=False)
    assert len(restored) == max_length and restored[-len(tail):] == tail
    assert restored == _ids(reference[0].preprocess(pairs, prompt=PROMPT), 0)
    chat = dataclasses.replace(encoder.chat.spec, restore_suffix=False)
    plain = TextEncoder.open(tiny_artifacts["ce-chat"], encoder.spec, model.manifest.routes[0].inputs, chat)
    cut = plain.encode(pairs, max_length=max_length, prompt=PROMPT)[0][0].ids
    assert cut != restored and cut[-len(tail):] != tail  # without the restore the scored token is the document's


def test_the_manifest_says_what_each_verb_runs(tiny_artifacts):
    shared = read_manifest(tiny_artifacts["shared-router"])
    assert {r.name for r in shared.routes} == {"query", "document"} and shared.requires == ("jinja2",)
    assert {v: (s.route, s.task, s.max_length) for v, s in shared.verbs.items()} == {
        "encode": ("document", None, None), "encode_query": ("query", "query", 64),
        "encode_document": ("document", "document", 48)}
    chat = shared.routes[0].chat
    assert all(r.chat == chat for r in shared.routes) and chat.task_variable and chat.variables["add_generation_prompt"]
    assert len({r.graph for r in shared.routes}) == 2 and shared.routes[0].tokenizer.file == "tokenizer.json"
    expansion = read_manifest(tiny_artifacts["query-expansion"])
    query = expansion.verbs["encode_query"]
    assert (query.expansion.strategy.value, query.expansion.length, query.expansion.attend) == ("fixed", 20, True)
    assert expansion.verbs["encode_document"].max_length == 32 and expansion.verbs["encode"].expansion is None
    assert read_manifest(tiny_artifacts["static"]).requires == ()
    assert read_manifest(tiny_artifacts["ce-chat-classifier"]).routes[0].chat.message_format.value == "structured"


def test_the_reranker_graph_computes_only_the_head_rows_it_reads(tiny_artifacts):
    """LogitScore reads two vocabulary rows at the last position; the graph's weight products
    must not span the vocabulary (the tied embedding table is only gathered from)."""
    import onnx

    artifact = tiny_artifacts["ce-chat"]
    graph = onnx.load(str(artifact / read_manifest(artifact).routes[0].graph))
    initializers = {i.name: tuple(i.dims) for i in graph.graph.initializer}
    vocabulary = max(dims[0] for dims in initializers.values() if len(dims) == 2)
    products = [initializers[i] for n in graph.graph.node if n.op_type in ("MatMul", "Gemm", "FusedMatMul")
                for i in n.input if i in initializers]
    assert products and all(vocabulary not in dims for dims in products)
    metrics = read_manifest(artifact).parity.metrics
    assert "predict.logit_rel_diff" in metrics and "predict:no prompt.logit_rel_diff" in metrics  # prompt on and off


def test_a_router_after_a_shared_transformer_may_be_saved_as_legacy_asym(tiny_chains, tmp_path, capsys):
    chain = shutil.copytree(tiny_chains["shared-router"], tmp_path / "chain")
    modules = json.loads((chain / "modules.json").read_text())
    modules[1]["type"] = "sentence_transformers.models.Asym"
    (chain / "modules.json").write_text(json.dumps(modules))
    assert main(["inspect", str(chain)]) == 0
    assert "compilable: yes" in capsys.readouterr().out


def test_a_static_embedder_has_int8_and_fp16_variants_that_pass_their_gates(tiny_chains, tiny_artifacts, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(openvino_recipes, "vnni", lambda: False)  # as built on a CPU without VNNI
    out = tmp_path / "dist"
    assert main(["build", str(tiny_chains["static-dense"]), "--out", str(out), "--format", "onnx,openvino",
                 "--precision", "int8", "-q", "--no-register"]) == 0
    assert main(["build", str(tiny_chains["static-dense"]), "--out", str(out), "--format", "openvino",
                 "--precision", "fp16", "-q", "--no-register"]) == 0
    fp32 = tiny_artifacts["static-dense"]
    for variant in ("onnx-int8", "openvino-int8", "openvino-fp16"):
        manifest = read_manifest(out / f"static-dense-{variant}")
        assert manifest.parity.status.value == "passed", (variant, manifest.parity.failures)
    # The verdicts hold on every CPU: the ONNX int8 Dense's weights are within the range no
    # uint8 x int8 pair saturates in (before: full-range weights, min cosine 0.9996 on CPUs with
    # VNNI and 0.92 without), the OpenVINO int8 weights multiply in float, and the table's int8
    # is looked up, not multiplied.
    assert assert_saturation_free(out / "static-dense-onnx-int8") > 0  # the Dense's weight
    openvino_int8 = read_manifest(out / "static-dense-openvino-int8")
    assert openvino_int8.int8_arithmetic is Int8Arithmetic.FLOAT_PRODUCTS
    (runner,) = load(out / "static-dense-openvino-int8")._runners.values()
    compiled = runner._session._compiled[0]
    assert compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE") == 0  # no int8 activations on any CPU
    onnx_int8 = read_manifest(out / "static-dense-onnx-int8")
    assert onnx_int8.recipe.details["int8_tables"].startswith("steps.0.table")
    size = {path.parent.name: path.stat().st_size for path in [*out.glob("*/model.*.data"), *out.glob("*/model.bin")]}
    table = (fp32 / "model.onnx.data").stat().st_size
    assert size["static-dense-onnx-int8"] < 0.35 * table and size["static-dense-openvino-int8"] < 0.35 * table
    assert size["static-dense-openvino-fp16"] < 0.55 * table
    texts = real_sentences()[:50]
    want = load(fp32).encode(texts)
    got = load(out / "static-dense-onnx-int8").encode(texts)
    assert float(np.min(np.sum(got * want, axis=1))) > 0.99  # normalized rows: cosine similarity

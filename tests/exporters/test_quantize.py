"""The int8 graph rewrite is exact in fp32, and the metric table matches what parity measures."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from packager.chain import load_reference, read_chain
from packager.chain.graph import compile_routes
from packager.exporters.onnx import export_onnx
from packager.exporters.quantize import unpack_attention, weight_matmuls
from packager.runtime.manifest import ChainKind
from packager.validators.gates import METRICS
from packager.validators.parity import dense_metrics, logit_metrics, sparse_metrics


def test_unpacking_attention_is_exact_and_exposes_the_projections(tiny_chains, tmp_path):
    chain = read_chain(str(tiny_chains["mean"]))
    (route,) = compile_routes(load_reference(chain), chain)
    export_onnx(route, tmp_path / "fused.onnx", fuse=True)
    model = onnx.load(tmp_path / "fused.onnx")
    before = len(weight_matmuls(model))
    assert unpack_attention(model) == 2  # one per layer
    assert len(weight_matmuls(model)) == before + 2 * 3  # Q, K and V projections
    assert not any(n.op_type == "Attention" for n in model.graph.node)
    onnx.save(model, tmp_path / "unpacked.onnx")
    feeds = {name: tensor.numpy() for name, tensor in zip(route.input_names, route.sample_inputs, strict=True)}

    def run(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]

    np.testing.assert_allclose(run(tmp_path / "unpacked.onnx"), run(tmp_path / "fused.onnx"), atol=1e-6)


def test_metric_table_names_what_parity_measures():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(12, 6))
    assert set(dense_metrics(a, a)) | {"token_min_cosine"} == METRICS[ChainKind.SENTENCE_TRANSFORMER]
    assert set(sparse_metrics(np.abs(a), np.abs(a))) == METRICS[ChainKind.SPARSE_ENCODER]
    logits = logit_metrics(a[:, :2], a[:, :2], [np.arange(6), np.arange(6, 12)])
    assert set(logits) | {"max_abs_diff", "score_rel_diff"} == METRICS[ChainKind.CROSS_ENCODER]


def test_the_exclusion_search_keeps_the_fewest_breaking_matmuls_in_float(tiny_chains, tmp_path):
    """A stand-in quantizer that wrecks two MatMuls and nudges the rest: the search must rank the
    two first and keep exactly those in float."""
    from onnx import numpy_helper

    from packager.exporters.quantize import ExclusionSearch
    from packager.exporters.recipe import RecipeContext, calibration_feeds
    from packager.validators.texts import real_sentences

    chain = read_chain(str(tiny_chains["mean"]))
    (route,) = compile_routes(load_reference(chain), chain)
    export_onnx(route, tmp_path / "fp32.onnx", fuse=True)
    (tmp_path / "tokenizer.json").write_text(route.tokenizer_json)
    matmuls = weight_matmuls(onnx.load(tmp_path / "fp32.onnx"))
    wrecked = {matmuls[1], matmuls[-2]}

    def quantize(source, target, excluded):
        model = onnx.load(source)
        weights = {n.name: n.input[1] for n in model.graph.node if n.name in matmuls}
        rng = np.random.default_rng(0)
        for initializer in model.graph.initializer:
            node = next((n for n, w in weights.items() if w == initializer.name and n not in excluded), None)
            if node is not None:
                array = numpy_helper.to_array(initializer)
                noise = 1.0 if node in wrecked else 1e-4
                initializer.CopyFrom(numpy_helper.from_array(
                    (array + noise * rng.normal(size=array.shape) * np.abs(array).mean()).astype(array.dtype),
                    initializer.name))
        onnx.save(model, target)

    texts = list(real_sentences()[:64])
    context = RecipeContext(kind=ChainKind.SENTENCE_TRANSFORMER, calibration=texts,
                            gate={"mean_cosine": 0.995, "min_cosine": 0.98}, tokenizer=route.tokenizer)
    feeds, inputs = calibration_feeds(route, tmp_path, context)
    search = ExclusionSearch(tmp_path / "fp32.onnx", tmp_path / "fp32.onnx", tmp_path, feeds, inputs, context, quantize)
    _, excluded, metrics = search.run(matmuls)
    assert set(excluded) == wrecked
    assert metrics["min_cosine"] > 0.98 + 0.02 * 0.8 and metrics["mean_cosine"] > 0.995

    nothing_wrecked = ExclusionSearch(tmp_path / "fp32.onnx", tmp_path / "fp32.onnx", tmp_path, feeds, inputs, context,
                                       lambda s, t, excluded: quantize(s, t, [*excluded, *wrecked]))
    assert nothing_wrecked.run(matmuls)[1] == []  # passing at once: nothing kept in float


def test_unpacking_keeps_a_concat_that_makes_the_output():
    """A multi-mode Pooling ends in a Concat: with no Attention to unpack, the graph is untouched."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Concat", ["a", "b"], ["sentence_embedding"], axis=1, name="pool_concat")], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2]) for n in ("a", "b")],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph)
    assert unpack_attention(model) == 0
    assert [n.name for n in model.graph.node] == ["pool_concat"]


def test_tables_are_stored_in_int8_rows_once_however_many_gathers_read_them(tmp_path):
    """A table two Gathers read becomes one int8 table and one scale per row; each looked-up row
    is within half a step of the float row, and an all-zero row stays zero."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from packager.exporters.quantize import quantize_tables

    table = (np.random.default_rng(0).normal(size=(50, 8)) * np.linspace(0.01, 3, 50)[:, None]).astype(np.float32)
    table[7] = 0
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "a"], ["x"]), helper.make_node("Gather", ["table", "b"], ["y"]),
         helper.make_node("Add", ["x", "y"], ["out"])], "g",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["n"]) for n in ("a", "b")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 8])], [numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    assert quantize_tables(model) == {"table": "50x8"}
    assert sorted(i.name for i in model.graph.initializer) == ["table.int8", "table.scale"]
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.arange(50, dtype=np.int64)
    got = session.run(None, {"a": ids, "b": np.full(50, 7, dtype=np.int64)})[0]
    step = np.abs(table).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(got - table) <= step / 2 + 1e-7) and not got[7].any()
    assert not np.array_equal(got, table)  # it is quantized, not the float table

"""The int8 graph rewrite is exact in fp32, and the metric table matches what parity measures."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from packager.chain import load_reference, read_chain
from packager.chain.graph import compile_routes
from packager.exporters.onnx import export_onnx
from packager.exporters.quantize import unpack_attention, weight_matmuls
from packager.runtime.enums import ChainKind
from packager.validators.gates import METRICS
from packager.validators.metrics import dense_metrics, logit_metrics, sparse_metrics


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


def _fragile(model, node_name: str, outlier: float) -> None:
    """Make MatMul ``node_name`` fragile in int8 and leave the float graph's function as it was:
    its input's first channel scaled by ``outlier`` and its weight's first row divided by it (the
    inverse of SmoothQuant), so one channel sets the whole tensor's uint8 range."""
    from onnx import helper, numpy_helper

    node = next(n for n in model.graph.node if n.name == node_name)
    weight = next(i for i in model.graph.initializer if i.name == node.input[1])
    array = numpy_helper.to_array(weight).copy()
    scale = np.ones(array.shape[0], dtype=np.float32)
    scale[0] = outlier
    weight.CopyFrom(numpy_helper.from_array((array / scale[:, None]).astype(np.float32), weight.name))
    model.graph.initializer.append(numpy_helper.from_array(scale, f"{node_name}.outlier"))
    model.graph.node.insert(list(model.graph.node).index(node), helper.make_node(
        "Mul", [node.input[0], f"{node_name}.outlier"], [f"{node_name}.scaled"], name=f"{node_name}.scale"))
    node.input[0] = f"{node_name}.scaled"


@pytest.fixture(scope="module")
def search_setup(tiny_chains, tmp_path_factory):
    """The tiny chain's unpacked fp32 graph, a copy with two MatMuls made fragile, and calibration
    feeds."""
    from packager.exporters.recipe import RecipeContext, calibration_feeds
    from packager.validators.texts import real_sentences

    folder = tmp_path_factory.mktemp("search")
    chain = read_chain(str(tiny_chains["mean"]))
    (route,) = compile_routes(load_reference(chain), chain)
    export_onnx(route, folder / "fp32.onnx", fuse=True)
    model = onnx.load(folder / "fp32.onnx")
    unpack_attention(model)
    del model.graph.value_info[:]
    onnx.save(model, folder / "fp32.onnx")
    matmuls = weight_matmuls(model)
    fragile = [matmuls[1], matmuls[-2]]
    for name in fragile:
        _fragile(model, name, 300.0)
    onnx.save(model, folder / "fragile.onnx")
    (folder / "tokenizer.json").write_text(route.tokenizer_json)
    context = RecipeContext(kind=ChainKind.SENTENCE_TRANSFORMER, calibration=list(real_sentences()[:64]),
                            gate={"mean_cosine": 0.995, "min_cosine": 0.98}, tokenizer=route.tokenizer)
    feeds, inputs = calibration_feeds(route, folder, context)
    return folder, matmuls, fragile, context, feeds, inputs


def test_the_ranking_graph_runs_each_matmul_in_int8_as_onnxruntime_does(search_setup):
    """One switchable graph stands for a quantized model per MatMul: with ``which = i`` its outputs
    are those of onnxruntime's own dynamic int8 of MatMul ``i`` alone, and with -1 the float
    graph's. The fragile MatMuls rank first."""
    from packager.exporters.quantize import quantize_dynamic_matmuls
    from packager.exporters.sensitivity import WHICH, output_errors, switchable_graph

    folder, matmuls, fragile, _, feeds, _ = search_setup
    errors = output_errors(folder / "fragile.onnx", feeds, matmuls)
    assert set(sorted(errors, key=errors.__getitem__)[-2:]) == set(fragile)
    path, measured = switchable_graph(folder / "fragile.onnx", matmuls)
    assert measured == matmuls
    switchable = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = feeds[len(feeds) // 2]

    def outputs(session, **extra):
        return session.run(None, {**feed, **extra})[0]

    float_graph = ort.InferenceSession(str(folder / "fragile.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(outputs(switchable, **{WHICH: np.array(-1)}), outputs(float_graph))
    for name in (fragile[0], matmuls[0], matmuls[-1]):
        quantize_dynamic_matmuls(folder / "fragile.onnx", folder / "one.onnx", [m for m in matmuls if m != name])
        int8 = outputs(ort.InferenceSession(str(folder / "one.onnx"), providers=["CPUExecutionProvider"]))
        switched = outputs(switchable, **{WHICH: np.array(matmuls.index(name))})
        np.testing.assert_allclose(switched, int8, atol=1e-5, err_msg=name)
        assert np.abs(int8 - outputs(float_graph)).max() > 1e-4  # the int8 MatMul did change the outputs


def test_the_exclusion_search_keeps_the_fewest_breaking_matmuls_in_float(search_setup):
    """With the dynamic recipe's own quantizer: the two fragile MatMuls (float-exact,
    int8-hostile) are kept in float and nothing else, every time, in an order that depends only
    on the errors and the names; the plain graph passes with all in int8. Its 7-bit weights make
    every CPU compute the same integers (test_seven_bit_weights_make_every_x86_kernel_agree), so
    this holds with and without VNNI."""
    from packager.exporters.quantize import ExclusionSearch, quantize_dynamic_matmuls, rank

    folder, matmuls, fragile, context, feeds, inputs = search_setup

    def search(graph, scratch):
        scratch.mkdir()
        return ExclusionSearch(graph, graph, scratch, feeds, inputs, context, quantize_dynamic_matmuls).run(matmuls)

    _, excluded, metrics = search(folder / "fragile.onnx", folder / "a")
    assert sorted(excluded) == sorted(fragile)
    assert metrics["min_cosine"] > 0.98 + 0.02 * 0.2 and metrics["mean_cosine"] > 0.995 + 0.005 * 0.2
    assert search(folder / "fragile.onnx", folder / "b")[1] == excluded  # the same decision again
    assert search(folder / "fp32.onnx", folder / "c")[1] == []  # passing at once: nothing kept in float
    assert rank({name: 1.0 for name in fragile[::-1]}) == sorted(fragile)  # a tie goes by name


def test_the_ranking_breaks_ties_by_name_whatever_the_order_measured():
    """Errors within float rounding of each other (4 significant digits) tie, whichever CPU or
    thread count made their last bits; the order is the same for any order of measurement."""
    from packager.exporters.quantize import rank

    errors = {"b_MatMul1": 0.012340001, "a_MatMul0": 0.5, "c_MatMul0": 0.0123399999, "a_MatMul1": 0.01234}
    expected = ["a_MatMul0", "a_MatMul1", "b_MatMul1", "c_MatMul0"]
    for order in (list(errors), sorted(errors), sorted(errors, reverse=True)):
        assert rank({name: errors[name] for name in order}) == expected


def test_seven_bit_weights_make_every_x86_kernel_agree():
    """The mechanism behind a gate that passed on one CPU and failed on another of the same kind:
    with full-range int8 weights, ``vpmaddubsw`` (x86 without VNNI) saturates pairs of products
    that VNNI adds exactly; with weights within the limit no pair can saturate, so the two
    kernels agree for every uint8 input (the extremes checked exhaustively)."""
    from int8_kernels import u8s8_exact, u8s8_without_vnni

    from packager.runtime.manifest import SATURATION_FREE_WEIGHT_LIMIT as LIMIT

    rng = np.random.default_rng(0)
    a = rng.integers(128, 256, size=(64, 32)).astype(np.uint8)  # activations a dynamic range puts high
    full = rng.integers(-127, 128, size=(32, 24)).astype(np.int8)
    assert (u8s8_without_vnni(a, full) != u8s8_exact(a, full)).any()  # 8-bit weights: the kernels differ
    weights = np.array(np.meshgrid(np.arange(-LIMIT, LIMIT + 1), np.arange(-LIMIT, LIMIT + 1))).reshape(2, -1)
    extremes = np.array(np.meshgrid([0, 255], [0, 255])).reshape(2, -1).T.astype(np.uint8)  # every pair's corners
    np.testing.assert_array_equal(u8s8_without_vnni(extremes, weights.astype(np.int8)),
                                  u8s8_exact(extremes, weights.astype(np.int8)))
    assert (u8s8_without_vnni(extremes, np.array([[LIMIT + 1], [LIMIT]], np.int8)) !=
            u8s8_exact(extremes, np.array([[LIMIT + 1], [LIMIT]], np.int8))).any()  # the limit is tight


def test_both_int8_quantizers_keep_every_weight_within_the_saturation_free_range(search_setup, tmp_path):
    """The recipes' own quantizer calls, dynamic and static, on the tiny chain's graph (with the
    fragile MatMuls: the widest weight ranges): every int8 weight of an integer product is
    within the limit; the embedding-table int8 (looked up, never multiplied) is not concerned."""
    from int8_kernels import integer_product_weights

    from packager.exporters.quantize import quantize_dynamic_matmuls, quantize_static_matmuls
    from packager.runtime.manifest import SATURATION_FREE_WEIGHT_LIMIT as LIMIT

    folder, matmuls, _, _, feeds, _ = search_setup
    quantize_dynamic_matmuls(folder / "fragile.onnx", tmp_path / "dynamic.onnx", [])
    quantize_static_matmuls(folder / "fragile.onnx", tmp_path / "static.onnx", [], feeds[:2], tmp_path / "ranges")
    for path in (tmp_path / "dynamic.onnx", tmp_path / "static.onnx"):
        weights = {name: w for name, w in integer_product_weights(path).items() if w.ndim == 2}  # not zero points
        assert len(weights) == len(matmuls), path.name
        assert max(int(np.abs(w.astype(int)).max()) for w in weights.values()) == LIMIT, path.name


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


def test_tied_and_small_tables_stay_float():
    """Only a table that nothing but row Gathers reads, and that holds a real share of the
    weights, is stored in int8: a tied one would gain an int8 copy beside it, a small one
    (token types, positions) would lose accuracy for nothing."""
    from onnx import TensorProto, helper, numpy_helper

    from packager.exporters.quantize import quantize_tables

    tables = {"solo": (100, 8), "tied": (100, 8), "tiny": (2, 8)}
    graph = helper.make_graph(
        [*(helper.make_node("Gather", [name, "ids"], [f"{name}.rows"]) for name in tables),
         helper.make_node("MatMul", ["solo.rows", "tied"], ["logits"])], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 100])],
        [numpy_helper.from_array(np.ones(shape, np.float32), name) for name, shape in tables.items()])
    model = helper.make_model(graph)
    assert quantize_tables(model) == {"solo": "100x8"}
    assert sorted(i.name for i in model.graph.initializer) == ["solo.int8", "solo.scale", "tied", "tiny"]


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


@pytest.mark.parametrize("excluded,external", [(0, False), (2, False), (2, True)],
                         ids=["all-int8", "two-in-float", "two-in-float-weights-on-disk"])
def test_the_dynamic_quantizer_writes_onnxruntimes_graph_weight_for_weight(search_setup, tmp_path, excluded,
                                                                           external):
    """The dynamic recipe rewrites the MatMuls itself, one weight in memory at a time, where
    onnxruntime's ``quantize_dynamic`` held three copies of the float model. Against onnxruntime's
    own quantizer with the options the recipe used (per channel, 7-bit weights, MatMuls with a
    constant weight only) on the tiny chain's graph with its fragile MatMuls (the widest ranges),
    its weights in the graph file or in a data file beside it (read one at a time, the float ones
    kept pointing there): the same int8 weights and scales, the same operators, and bit-identical
    outputs."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from packager.exporters.quantize import QUANTIZER_OPTIONS, quantize_dynamic_matmuls

    folder, matmuls, fragile, _, feeds, _ = search_setup
    source = folder / "fragile.onnx"
    if external:
        source = tmp_path / "fragile.onnx"
        onnx.save(onnx.load(folder / "fragile.onnx"), source, save_as_external_data=True,
                  location="fragile.onnx.data")
    skip = fragile[:excluded]
    ours = source.with_name(f"ours-{excluded}.onnx")
    assert quantize_dynamic_matmuls(source, ours, skip) == len(matmuls) - excluded
    if external:
        with pytest.raises(ValueError, match="beside"):  # its float weights would point at nothing
            quantize_dynamic_matmuls(source, tmp_path / "elsewhere" / "ours.onnx", skip)
    theirs = tmp_path / "theirs.onnx"
    quantize_dynamic(source, theirs, per_channel=True, reduce_range=True,
                     weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], nodes_to_exclude=skip,
                     extra_options=QUANTIZER_OPTIONS)

    def graph(path):
        model = onnx.load(path)
        return model, {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}

    (our_model, our_weights), (their_model, their_weights) = graph(ours), graph(theirs)
    int8 = sorted(name for name in their_weights if name.endswith(("_quantized", "_scale", "_zero_point")))
    assert len(int8) == 3 * (len(matmuls) - excluded)
    for name in int8:
        np.testing.assert_array_equal(our_weights[name], their_weights[name], err_msg=name)
        assert our_weights[name].dtype == their_weights[name].dtype, name
    assert sorted(n.op_type for n in our_model.graph.node) == sorted(n.op_type for n in their_model.graph.node)
    assert sum(n.op_type == "MatMul" for n in our_model.graph.node) >= excluded

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (ours, theirs)]
    for feed in feeds[:3]:
        ours_out, theirs_out = (s.run(None, feed)[0] for s in sessions)
        np.testing.assert_array_equal(ours_out, theirs_out)


def test_a_gemm_is_quantized_as_onnxruntime_quantizes_it(tmp_path):
    """A Dense over a pooled vector exports as a Gemm with a transposed weight; onnxruntime's
    dynamic quantizer rewrites it as MatMul + Add first, and so does the recipe's: the same int8
    weight and bit-identical outputs."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from packager.exporters.quantize import QUANTIZER_OPTIONS, quantize_dynamic_matmuls

    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(24, 32)).astype(np.float32), rng.normal(size=24).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="dense", transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 24])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # what this onnxruntime reads
    onnx.save(model, tmp_path / "gemm.onnx")
    assert quantize_dynamic_matmuls(tmp_path / "gemm.onnx", tmp_path / "ours.onnx", []) == 1
    quantize_dynamic(tmp_path / "gemm.onnx", tmp_path / "theirs.onnx", per_channel=True, reduce_range=True,
                     weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], extra_options=QUANTIZER_OPTIONS)
    x = {"x": rng.normal(size=(5, 32)).astype(np.float32)}
    ours, theirs = (ort.InferenceSession(str(tmp_path / f"{n}.onnx"), providers=["CPUExecutionProvider"])
                    for n in ("ours", "theirs"))
    np.testing.assert_array_equal(ours.run(None, x)[0], theirs.run(None, x)[0])
    weights = [{i.name: numpy_helper.to_array(i) for i in onnx.load(tmp_path / f"{n}.onnx").graph.initializer}
               for n in ("ours", "theirs")]
    np.testing.assert_array_equal(weights[0]["w_quantized"], weights[1]["w_quantized"])

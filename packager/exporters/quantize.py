"""int8 ONNX: onnxruntime's quantizers on the fused graph, with the nodes that break accuracy
kept in float, found by measuring.

1. Export and fuse the fp32 graph, then *unpack* each fused Attention into its three Q/K/V
   projections and a MultiHeadAttention: exact in fp32, and it lets the projections (a quarter of
   the weights' arithmetic) quantize; onnxruntime's QAttention cannot take the attention bias
   that carries the padding mask.
2. Quantize every weight MatMul: int8 weights per output channel, int8 activations with
   per-batch ranges (dynamic) or calibrated ranges (static, QDQ). The weights use 7 bits
   (``reduce_range``: within +-64), so that no two uint8 x int8 products overflow the int16 that
   x86 CPUs without VNNI add them in: every CPU computes the same integers
   (``Int8Arithmetic.SATURATION_FREE``), and the gate's verdict on the build host holds on
   any server. Every large table only Gathers
   read (a transformer's token embeddings, a static embedder's table) is stored in int8 with one
   scale per row (``quantize_tables``): all-MiniLM-L6-v2's token table is 47 of its 90 MB,
   and a loader serving it touches the table's pages as new tokens come.
3. If the outputs on the calibration inputs miss the gate (tightened by a margin), rank the
   MatMuls by the output error each causes alone in int8, on a subset of the calibration
   inputs, all from one session (``packager.exporters.sensitivity``), and keep the fewest
   most sensitive ones in float that make it pass (a binary search over how many, each step
   quantizing and running the whole graph on every calibration input).
   The parity gate then judges the result against the torch reference, on other inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from packager.errors import ExportError
from packager.exporters.dynamic_int8 import quantizable, quantize_dynamic_matmuls
from packager.exporters.onnx import check_loads, export_onnx, read_weight, save_beside, save_external
from packager.exporters.recipe import RecipeContext, RecipeResult, calibration_feeds
from packager.exporters.sensitivity import output_errors
from packager.progress import step
from packager.quiet import quiet
from packager.runtime.enums import ChainKind, Format, Int8Arithmetic, Precision
from packager.runtime.similarity import maxsim
from packager.scratch import scratch_dir
from packager.validators.metrics import (
    dense_metrics,
    groups,
    logit_metrics,
    row_cosine,
    score_metrics,
    sparse_metrics,
)
from packager.validators.report import Check, lower_is_better

if TYPE_CHECKING:
    from packager.chain.graph import RouteGraph

log = logging.getLogger(__name__)

MARGIN = 0.2  # the search aims this share of the way from each threshold towards perfect
# Weights only (activations times activations stay float); onnx's shape inference cannot see
# through onnxruntime's fused operators, so untyped tensors are taken as float.
QUANTIZER_OPTIONS = {"MatMulConstBOnly": True, "DefaultTensorType": 1}  # 1: onnx.TensorProto.FLOAT
# onnxruntime's static quantizer writes its graph's weights to ``<graph>.data`` (no protobuf copy
# of the whole model in memory while it is saved, and no 2 GiB protobuf limit).
EXTERNAL_WEIGHTS = {"use_external_data_format": True}


class OnnxInt8Dynamic:
    name = "onnx-int8-dynamic"
    format = Format.ONNX
    precision = Precision.INT8
    calibrates = True  # the exclusion search measures on the calibration inputs
    int8_arithmetic: Int8Arithmetic | None = Int8Arithmetic.SATURATION_FREE

    def export(self, graph: RouteGraph, dest: Path, *, stem: str, context: RecipeContext) -> RecipeResult:
        def quantize(source: Path, target: Path, excluded: list[str], feeds: list) -> None:
            quantize_dynamic_matmuls(source, target, excluded)

        return _quantize_route(graph, dest, stem=stem, context=context, quantize=quantize, name=self.name)


class OnnxInt8Static:
    name = "onnx-int8-static-qdq"
    format = Format.ONNX
    precision = Precision.INT8
    calibrates = True
    int8_arithmetic: Int8Arithmetic | None = Int8Arithmetic.SATURATION_FREE

    def export(self, graph: RouteGraph, dest: Path, *, stem: str, context: RecipeContext) -> RecipeResult:
        with scratch_dir("calibration") as scratch:
            cache = Path(scratch) / "ranges.json"  # activation ranges are measured once, reused by the search

            def quantize(source: Path, target: Path, excluded: list[str], feeds: list) -> None:
                quantize_static_matmuls(source, target, excluded, feeds, cache)

            return _quantize_route(graph, dest, stem=stem, context=context, quantize=quantize, name=self.name)


def quantize_static_matmuls(source: Path, target: Path, excluded: list[str], feeds: list, cache: Path) -> None:
    """The static recipe's quantizer: every weight MatMul but ``excluded`` in QDQ int8, 7-bit
    weights per output channel, uint8 activations with MinMax ranges over ``feeds`` (measured once
    into ``cache``, then read from it)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self, feeds: list) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> dict | None:
            return next(self._feeds, None)

    quantize_static(source, target, Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, op_types_to_quantize=["MatMul"],
                    nodes_to_exclude=excluded, calibrate_method=CalibrationMethod.MinMax,
                    calibration_cache_path=cache, extra_options=QUANTIZER_OPTIONS, **EXTERNAL_WEIGHTS)


Quantize = Callable[[Path, Path, list[str], list], None]


def _quantize_route(graph: RouteGraph, dest: Path, *, stem: str, context: RecipeContext, quantize: Quantize,
                    name: str) -> RecipeResult:
    try:
        return _quantize(graph, dest, stem=stem, context=context, quantize=quantize, name=name)
    except (ExportError, OSError):  # OSError: the disk or permissions, reported by the build
        raise
    except Exception as e:  # onnxruntime's quantizers raise whatever they meet; a recipe fails with its name
        raise ExportError(f"route {graph.name!r}: {name} failed: {type(e).__name__}: {e}") from e


def _quantize(graph: RouteGraph, dest: Path, *, stem: str, context: RecipeContext, quantize: Quantize,
              name: str) -> RecipeResult:
    import onnx

    target = dest / f"{stem}.onnx"
    with scratch_dir("int8") as scratch:
        folder = Path(scratch)
        fused = folder / "fused.onnx"
        export_onnx(graph, fused, fuse=True)
        # The graph without its weights: they stay in fused.onnx.data, each read when an edit needs
        # it, and every graph saved here points at them (a copy per graph would hold the model's
        # weights in memory once per copy: a 0.6B decoder's int8 build peaked at 4.8x its weights).
        model = onnx.load(fused, load_external_data=False)
        unpack_attention(model, folder)
        # The fused graph's recorded shapes can disagree with onnx's own inference, which the
        # quantizers run; let them infer from scratch.
        del model.graph.value_info[:]
        fp32 = save_beside(model, folder / "fp32.onnx")
        tables = quantize_tables(model, folder)
        source = save_beside(model, folder / "tables.onnx") if tables else fp32
        matmuls = weight_matmuls(model)
        del model
        feeds, inputs = calibration_feeds(graph, dest, context)
        search = ExclusionSearch(fp32, source, folder, feeds, inputs, context,
                                 lambda source, out, excluded: quantize(source, out, excluded, feeds))
        chosen, excluded, metrics = search.run(matmuls)
        files = save_external(chosen, target)
    check_loads(target)
    log.info("%s: %d of %d weight MatMuls in int8 (%d kept in float), %d embedding tables in int8", name,
             len(matmuls) - len(excluded), len(matmuls), len(excluded), len(tables))
    return RecipeResult(files=files, details={
        "int8_matmuls": str(len(matmuls) - len(excluded)), "float_matmuls": ",".join(excluded) or "none",
        **({"int8_tables": ",".join(f"{k} ({v})" for k, v in tables.items())} if tables else {}),
        **{f"calibration.{k}": f"{v:.6g}" for k, v in metrics.items()}})


MIN_TABLE_SHARE = 0.05  # of the graph's weights: a token table (MiniLM: 52 %), not token types or positions (1 %)


def quantize_tables(model, folder: Path | str = "") -> dict[str, str]:
    """Store each float table only Gathers read from an initializer, if it holds at least
    MIN_TABLE_SHARE of the weights (a transformer's token embeddings, a static embedder's table),
    in int8 with one symmetric scale per row: ``Gather(int8 table) -> Cast -> Mul`` by the
    gathered rows' scales. A row's error is at most half a step, max|row| / 254. A table kept
    in an external data file is read from ``folder``. Returns the tables and their shapes."""
    from onnx import TensorProto, helper, numpy_helper

    def row_gather(node) -> bool:
        return node.op_type == "Gather" and not node.domain and \
            all(a.name != "axis" or helper.get_attribute_value(a) == 0 for a in node.attribute)

    # A table another node or a graph output also reads (tied weights) stays as it is: an int8
    # copy beside it would only add bytes; so does a small one (token types, positions, relative
    # attention biases): it would cost accuracy and save nothing.
    shared = {o.name for o in model.graph.output} | \
        {name for node in model.graph.node for name in (node.input[1:] if row_gather(node) else node.input)}
    initializers = {i.name: i for i in model.graph.initializer}
    smallest = MIN_TABLE_SHARE * sum(int(np.prod(i.dims)) for i in initializers.values())
    nodes, tables = [], {}
    for node in model.graph.node:
        table = initializers.get(node.input[0]) if row_gather(node) else None
        if table is None or table.name in shared or table.data_type != TensorProto.FLOAT or len(table.dims) != 2 or \
                int(np.prod(table.dims)) < smallest:
            nodes.append(node)
            continue
        stem, ids, output = table.name, node.input[1], node.output[0]
        if stem not in tables:  # once per table, however many Gathers read it
            weights = read_weight(table, folder)
            scales = np.abs(weights).max(axis=1, keepdims=True) / 127
            scales[scales == 0] = 1  # an all-zero row stays zero
            rows = np.clip(np.rint(weights / scales), -127, 127).astype(np.int8)
            model.graph.initializer.extend([numpy_helper.from_array(rows, f"{stem}.int8"),
                                            numpy_helper.from_array(scales.astype(np.float32), f"{stem}.scale")])
            tables[stem] = "x".join(map(str, weights.shape))
        nodes += [helper.make_node("Gather", [f"{stem}.int8", ids], [f"{output}.int8"], name=f"{output}.gather_int8"),
                  helper.make_node("Cast", [f"{output}.int8"], [f"{output}.float"], to=TensorProto.FLOAT,
                                   name=f"{output}.cast"),
                  helper.make_node("Gather", [f"{stem}.scale", ids], [f"{output}.scale"],
                                   name=f"{output}.gather_scale"),
                  helper.make_node("Mul", [f"{output}.float", f"{output}.scale"], [output], name=f"{output}.mul")]
    for stem in tables:
        model.graph.initializer.remove(initializers[stem])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return tables


def unpack_attention(model, folder: Path | str = "") -> int:
    """Replace each fused ``Attention(x, W_qkv, b, attention_bias=...)`` by three MatMuls (one per
    projection: W_qkv's column blocks, or the initializers a Concat joins into it) and a
    ``MultiHeadAttention`` with the same bias and attention bias. A packed weight kept in an
    external data file is read from ``folder``. Returns how many."""
    from onnx import helper

    nodes, unpacked, packed = [], 0, set()
    for node in model.graph.node:
        inputs = [*node.input, *[""] * (6 - len(node.input))]
        weights = _projection_weights(model, node, inputs[1], folder) if node.op_type == "Attention" and \
            node.domain == "com.microsoft" and not inputs[3] and not inputs[4] else None  # no mask_index, no past
        if weights is None:
            nodes.append(node)
            continue
        packed.add(inputs[1])
        projections = [f"{node.name}_projection{j}" for j in range(3)]
        nodes += [helper.make_node("MatMul", [inputs[0], weight], [projection], name=f"{node.name}_MatMul{j}")
                  for j, (weight, projection) in enumerate(zip(weights, projections, strict=True))]
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute
                      if a.name in ("num_heads", "mask_filter_value", "scale", "unidirectional")}
        nodes.append(helper.make_node("MultiHeadAttention", [*projections, inputs[2], "", inputs[5]], list(node.output),
                                      name=f"{node.name}_MultiHeadAttention", domain="com.microsoft", **attributes))
        unpacked += 1
    used = {name for node in nodes for name in node.input} | {o.name for o in model.graph.output}
    kept = [n for n in nodes if not (n.op_type == "Concat" and set(n.output) <= packed - used)]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    used = {name for node in kept for name in node.input}  # drop the packed weights the split replaced
    unused = [i for i in model.graph.initializer if i.name not in used]
    for initializer in unused:
        model.graph.initializer.remove(initializer)
    return unpacked


def _projection_weights(model, node, name: str, folder: Path | str) -> list[str] | None:
    """The Q, K and V weight initializers behind an Attention's packed weight, or None."""
    from onnx import helper, numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    producer = next((n for n in model.graph.node if name in n.output), None)
    if producer is not None:
        parts = list(producer.input)
        return parts if producer.op_type == "Concat" and len(parts) == 3 and all(p in initializers for p in parts) \
            else None
    if name not in initializers:
        return None
    packed = read_weight(initializers[name], folder)
    sizes = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "qkv_hidden_sizes"),
                 [packed.shape[1] // 3] * 3)
    parts = []
    for j, block in enumerate(np.split(packed, np.cumsum(sizes)[:-1], axis=1)):
        parts.append(f"{node.name}_weight{j}")
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(block), parts[-1]))
    return parts


def weight_matmuls(model) -> list[str]:
    """The MatMuls the int8 recipes quantize (``quantizable``), by node name."""
    initializers = {i.name: i for i in model.graph.initializer}
    return [n.name for n in model.graph.node if quantizable(n, initializers)]


class ExclusionSearch:
    """Quantize every weight MatMul, or find the fewest most sensitive ones to keep in float."""

    def __init__(self, fp32: Path, source: Path, scratch: Path, feeds: list, inputs: list, context: RecipeContext,
                 quantize: Callable[[Path, Path, list[str]], None]) -> None:
        """``fp32``: the graph the outputs are compared with; ``source``: the graph quantized (fp32,
        or fp32 with its tables already in int8)."""
        self.fp32, self.source, self.scratch, self.feeds, self.quantize = fp32, source, scratch, feeds, quantize
        self.context, self.inputs = context, inputs
        self.reference = _outputs(fp32, feeds)
        self._tried: dict[int, tuple[Path, dict[str, float]]] = {}

    def run(self, nodes: list[str]) -> tuple[Path, list[str], dict[str, float]]:
        with step(f"calibration: every MatMul in int8, measured on {len(self.inputs)} inputs"):
            path, metrics = self._try(nodes, 0)
        if self._passes(metrics) or len(nodes) < 2:
            return path, [], metrics
        log.info("int8 misses the gate on the calibration inputs; measuring the %d MatMuls one by one", len(nodes))
        with step(f"calibration: the output error of each of {len(nodes)} MatMuls alone in int8",
                  total=len(nodes)) as advance:
            errors = output_errors(self.fp32, self.feeds, nodes, advance)
        ranked = rank(errors)
        low, high = 1, len(nodes) // 2  # more than half in float would not be an int8 model any more
        while low < high:  # the fewest exclusions that pass, assuming more exclusions never hurt
            middle = (low + high) // 2
            if self._passes(self._try(ranked, middle)[1]):
                high = middle
            else:
                low = middle + 1
        path, metrics = self._try(ranked, high)
        if not self._passes(metrics):
            log.warning("int8 misses the gate on the calibration inputs even with %d of %d MatMuls in float; "
                        "the parity gate will judge it", high, len(nodes))
        return path, ranked[:high], metrics

    def _try(self, ranked: list[str], excluded: int) -> tuple[Path, dict[str, float]]:
        if excluded not in self._tried:
            target = self.scratch / f"int8-{excluded}.onnx"
            with quiet(""):  # onnxruntime's quantizers log advice through the root logger
                self.quantize(self.source, target, ranked[:excluded])
            self._tried[excluded] = target, _graph_metrics(self.context, self.inputs, self.reference,
                                                           _outputs(target, self.feeds), self.feeds)
            log.info("int8 search pass %d: %d MatMuls in float: %s", len(self._tried), excluded,
                     ", ".join(f"{k} {v:.6g}" for k, v in sorted(self._tried[excluded][1].items())))
        return self._tried[excluded]

    def _passes(self, metrics: dict[str, float]) -> bool:
        """The gate, tightened by the margin, on the metrics the graph outputs allow."""
        return all(Check(metric, metrics[metric], _tightened(metric, threshold)).passed
                   for metric, threshold in self.context.gate.items() if metric in metrics)


def rank(errors: dict[str, float]) -> list[str]:
    """The MatMuls most sensitive first. Errors equal to 4 significant digits tie, and ties go by
    name: the order depends on nothing but the errors and the names, so float sums that differ
    in their last bits (another CPU's kernels) reorder two MatMuls only where their errors
    straddle a rounding boundary. The search's sessions run on one thread, so on one CPU the
    errors, and the order, are the same in every run."""
    return sorted(errors, key=lambda node: (-float(f"{errors[node]:.4g}"), node))


def _tightened(metric: str, threshold: float) -> float:
    return threshold * (1 - MARGIN) if lower_is_better(metric) else threshold + (1 - threshold) * MARGIN


def _graph_metrics(context: RecipeContext, inputs: list, reference: np.ndarray, candidate: np.ndarray,
                   feeds: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """The gate's metrics between fp32 and int8 graph outputs (embeddings, or logits; token
    embeddings scored with MaxSim, every input against every other input)."""
    if context.kind is ChainKind.CROSS_ENCODER:
        return logit_metrics(reference, candidate, groups([tuple(p) for p in inputs]))
    if context.kind is ChainKind.SPARSE_ENCODER:
        return sparse_metrics(reference, candidate)
    if context.kind is ChainKind.MULTI_VECTOR_ENCODER:  # rows are the real tokens of each input in turn
        cosine = row_cosine(reference, candidate)
        ends = np.cumsum([n for feed in feeds for n in feed["attention_mask"].sum(axis=1)])[:-1]
        ref, cand = np.split(reference, ends), np.split(candidate, ends)
        others = ~np.eye(len(ref), dtype=bool)  # an input against itself ranks first whatever the error
        return {"token_min_cosine": float(cosine.min()), "token_mean_cosine": float(cosine.mean()),
                **score_metrics(maxsim(ref, ref), maxsim(cand, cand), others)}
    return dense_metrics(reference, candidate)


def _outputs(path: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    """The graph's first output for every calibration batch, in the feeds' order: a row per input,
    or for token embeddings a row per real token."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # One thread: the same float summation order in every process, whatever ran before and
    # however busy the machine, so the search decides the same thing every time.
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_outputs()[0].name
    rows = []
    for feed in feeds:
        values = session.run([name], feed)[0]
        tokens = values.ndim == 3
        rows.append(values[feed["attention_mask"].astype(bool)] if tokens else values.reshape(len(values), -1))
    return np.concatenate(rows)

"""How much int8 hurts the outputs through each weight MatMul alone: the ranking the int8
exclusion search keeps MatMuls in float by (``packager.exporters.quantize``).

One graph measures them all: each weight MatMul becomes ``If(which == i)``, whose branches are
the float MatMul and the MatMul as onnxruntime's dynamic int8 computes it (the input through
``DynamicQuantizeLinear``, uint8 with one range per tensor and batch, times the weight in int8
with one symmetric scale per output channel, within ``SATURATION_FREE_WEIGHT_LIMIT`` as the
recipes quantize). Run with ``which = i`` on a subset of the
calibration batches, it gives the outputs with MatMul ``i`` alone in int8, from one session:
no quantized model written and loaded per MatMul, and only the one MatMul's extra work per run.

The MatMul's error is measured where it counts, at the outputs (a local error misses how much
the layers after a MatMul amplify or damp it: on MPNet a ranking by the error of each MatMul's
own product, X @ W against its int8 version, kept half the MatMuls in float and still failed
the gate). Static int8 is ranked with
dynamic ranges; the search's binary search then confirms with the recipe's own quantizer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from packager.exporters.dynamic_int8 import quantizable
from packager.exporters.onnx import read_weight, save_beside
from packager.runtime.manifest import SATURATION_FREE_WEIGHT_LIMIT

SUBSET_BATCHES = 4  # calibration batches the ranking runs on, spread over the lengths ...
SUBSET_SPAN = 0.75  # ... of the shortest three quarters (the longest batch alone costs more than these four)
WHICH = "packager_int8_matmul"  # the selector input: the index of the MatMul run in int8, -1 for none


def output_errors(fp32: Path, feeds: list[dict[str, np.ndarray]], matmuls: list[str],
                  advance: Callable[[int], None] | None = None) -> dict[str, float]:
    """The relative error of the graph's first output (real tokens only, for token outputs) when
    only that MatMul of ``matmuls`` (node names in ``fp32``) is in dynamic int8, on a subset of
    ``feeds``; the ranking graph is written beside ``fp32``. A MatMul the graph cannot switch (a
    weight that is not 2-D, or no activation input) counts as the most sensitive. ``advance(1)``
    is called per MatMul."""
    import onnxruntime as ort

    last = int((len(feeds) - 1) * SUBSET_SPAN)
    subset = [feeds[i] for i in np.unique(np.linspace(0, last, min(SUBSET_BATCHES, last + 1)).round().astype(int))]
    path, measured = switchable_graph(fp32, matmuls)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # the same sums in every process
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name

    def run(which: int) -> np.ndarray:
        rows = []
        for feed in subset:
            values = session.run([output], {**feed, WHICH: np.array(which, dtype=np.int64)})[0]
            mask = feed.get("attention_mask")
            tokens = values.ndim == 3 and mask is not None and values.shape[:2] == mask.shape
            rows.append(values[mask.astype(bool)] if tokens else values.reshape(len(values), -1))
        return np.concatenate(rows)

    reference = run(-1)
    scale = max(float(np.linalg.norm(reference)), 1e-12)
    errors = dict.fromkeys(matmuls, float("inf"))
    for index, name in enumerate(measured):
        errors[name] = float(np.linalg.norm(run(index) - reference)) / scale
        if advance is not None:
            advance(1)
    if advance is not None:
        advance(len(matmuls) - len(measured))
    return errors


def switchable_graph(fp32: Path, matmuls: list[str]) -> tuple[Path, list[str]]:
    """``fp32`` with each of ``matmuls`` (2-D weight, activation input) behind an ``If`` on the
    ``WHICH`` input, saved beside it: its float weights stay in ``fp32``'s data file (read one at a
    time, to make each int8 copy), the int8 copies go to the graph's own; the MatMuls in index
    order. (A weight two MatMuls share is switched for each on its own, where onnxruntime's
    quantizer would store it once in int8 for both; the graphs built here share none.)"""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(fp32, load_external_data=False)
    initializers = {i.name: i for i in model.graph.initializer}
    wanted = set(matmuls)
    nodes, added = [], []
    measured: list[str] = []
    for node in model.graph.node:
        if node.name not in wanted or not quantizable(node, initializers):
            nodes.append(node)
            continue
        weight = initializers[node.input[1]]
        index, stem, (x, w), (y,) = len(measured), f"{WHICH}_{len(measured)}", node.input, node.output
        array = read_weight(weight, fp32.parent).astype(np.float32, copy=False)
        limit = SATURATION_FREE_WEIGHT_LIMIT
        scale = np.abs(array).max(axis=0) / limit
        scale[scale == 0] = 1
        added += [numpy_helper.from_array(np.clip(np.rint(array / scale), -limit, limit).astype(np.int8), f"{stem}_w"),
                  numpy_helper.from_array(scale.astype(np.float32), f"{stem}_scale"),
                  numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{stem}_zero"),
                  numpy_helper.from_array(np.array(index, np.int64), f"{stem}_index")]
        int8 = helper.make_graph([
            helper.make_node("DynamicQuantizeLinear", [x], [f"{stem}_xq", f"{stem}_xs", f"{stem}_xz"]),
            helper.make_node("DequantizeLinear", [f"{stem}_xq", f"{stem}_xs", f"{stem}_xz"], [f"{stem}_x"]),
            helper.make_node("DequantizeLinear", [f"{stem}_w", f"{stem}_scale", f"{stem}_zero"], [f"{stem}_wf"],
                             axis=1),
            helper.make_node("MatMul", [f"{stem}_x", f"{stem}_wf"], [f"{stem}_y8"])],
            f"{stem}_int8", [], [helper.make_tensor_value_info(f"{stem}_y8", TensorProto.FLOAT, None)])
        plain = helper.make_graph([helper.make_node("MatMul", [x, w], [f"{stem}_y"])], f"{stem}_float", [],
                                  [helper.make_tensor_value_info(f"{stem}_y", TensorProto.FLOAT, None)])
        nodes += [helper.make_node("Equal", [WHICH, f"{stem}_index"], [f"{stem}_on"]),
                  helper.make_node("If", [f"{stem}_on"], [y], name=node.name, then_branch=int8, else_branch=plain)]
        measured.append(node.name)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(added)
    model.graph.input.append(helper.make_tensor_value_info(WHICH, TensorProto.INT64, []))
    del model.graph.value_info[:]  # the If outputs' shapes are left to onnxruntime
    return save_beside(model, fp32.with_name("switchable.onnx")), measured

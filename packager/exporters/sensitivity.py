"""How much int8 hurts each weight MatMul, from one float run: the ranking the int8 exclusion
search keeps MatMuls in float by (``packager.exporters.quantize``).

Each MatMul's input is captured from the fp32 graph on a subset of the calibration batches and
quantized as onnxruntime's int8 MatMuls quantize it: uint8 with one asymmetric range per tensor
(per batch for dynamic int8; over all batches for static int8's calibrated ranges), times the
weight in int8 with one symmetric scale per output channel. A MatMul's error is the relative
error of that product against the float product, over the real tokens only (padding widens a
dynamic range, which counts, but its own outputs are never read). The cost is one run of the
float graph and two products per MatMul: linear in the model's size, where measuring each
MatMul's effect on the outputs takes one whole-model run per MatMul.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

SUBSET_BATCHES = 4  # calibration batches the errors are measured on, spread over the lengths


def matmul_errors(fp32: Path, feeds: list[dict[str, np.ndarray]], matmuls: list[str], *,
                  static: bool) -> dict[str, float]:
    """The relative int8 error of each MatMul of ``matmuls`` (node names in ``fp32``) on a subset
    of ``feeds``; ``static``: activation ranges calibrated over the subset instead of per batch."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    model = onnx.load(fp32)
    initializers = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node if n.name in set(matmuls) and n.input[0] not in initializers
             and len(initializers[n.input[1]].dims) == 2}  # others (none in the graphs built here) rank last
    weights = {name: numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32, copy=False)
               for name, node in nodes.items()}
    activations = list(dict.fromkeys(node.input[0] for node in nodes.values()))
    outputs = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                              for name in activations if name not in outputs)
    del initializers
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # the same sums in every process
    options.enable_cpu_mem_arena = False  # the captured batches are copied out; keep no arena of their size
    with tempfile.TemporaryDirectory(prefix="packager-capture-") as scratch:  # weights beside it: any size
        capture = Path(scratch) / "capture.onnx"
        onnx.save(model, capture, save_as_external_data=True, location="capture.onnx.data")
        del model
        session = ort.InferenceSession(str(capture), options, providers=["CPUExecutionProvider"])
    subset = [feeds[i] for i in np.unique(np.linspace(0, len(feeds) - 1, min(SUBSET_BATCHES, len(feeds))).round()
                                          .astype(int))]

    def captured(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(activations, session.run(activations, feed), strict=True))

    ranges: dict[str, tuple[float, float]] = {}
    if static:  # MinMax calibration: one range per tensor over every batch
        for feed in subset:
            for name, x in captured(feed).items():
                low, high = ranges.get(name, (0.0, 0.0))
                ranges[name] = (min(low, float(x.min())), max(high, float(x.max())))
    readers: dict[str, list[str]] = {}  # activation -> the MatMuls reading it (Q, K and V share theirs)
    for name, node in nodes.items():
        readers.setdefault(node.input[0], []).append(name)
    error = dict.fromkeys(nodes, 0.0)
    norm = dict.fromkeys(nodes, 0.0)
    for feed in subset:
        values = captured(feed)
        for activation in activations:  # one at a time: a batch's activations are the memory this needs
            value = values.pop(activation)
            bounds = ranges[activation] if ranges else (float(value.min()), float(value.max()))
            x, x_q = _real_rows(value, feed), _real_rows(_uint8_activation(value, bounds), feed)
            for name in readers[activation]:
                weight = weights[name]
                exact = x @ weight
                weight_q = _int8_weight(weight)
                error[name] += float(np.square(x_q @ weight_q - exact).sum())
                norm[name] += float(np.square(exact).sum())
    return {name: (error[name] / norm[name]) ** 0.5 if norm.get(name) else 0.0 for name in matmuls}


def _int8_weight(weight: np.ndarray) -> np.ndarray:
    """``weight`` through int8 with one symmetric scale per output channel (column)."""
    scale = np.abs(weight).max(axis=0, keepdims=True) / 127
    scale[scale == 0] = 1
    return (np.clip(np.rint(weight / scale), -127, 127) * scale).astype(np.float32)


def _uint8_activation(x: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """``x`` through uint8 with an asymmetric range that includes zero (DynamicQuantizeLinear)."""
    low, high = min(bounds[0], 0.0), max(bounds[1], 0.0)
    scale = (high - low) / 255 or 1.0
    zero = np.clip(np.rint(-low / scale), 0, 255)
    return ((np.clip(np.rint(x / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)


def _real_rows(x: np.ndarray, feed: dict[str, np.ndarray]) -> np.ndarray:
    """``x`` as rows of its last axis, the padding's rows left out where the mask tells them."""
    mask = feed.get("attention_mask")
    if mask is not None and x.ndim == 3 and x.shape[:2] == mask.shape:
        return x[mask.astype(bool)]
    return x.reshape(-1, x.shape[-1])

"""The dynamic int8 recipe's quantizer: each weight MatMul rewritten into onnxruntime's dynamic
int8 form, its weight read from disk and quantized one at a time.

For each MatMul it quantizes (``quantizable``: a 2-D float weight, an activation input) the graph
is the one onnxruntime's own ``quantize_dynamic`` writes (per-channel, 7-bit weights,
``MatMulConstBOnly``), node for node and value for value, so onnxruntime fuses it into the same
``DynamicQuantizeMatMul`` kernels: the input through one ``DynamicQuantizeLinear`` per
activation, ``MatMulInteger`` with the int8 weight, ``Cast`` to float, and a ``Mul`` by the
input's scale times the weight's per-column scales. onnxruntime's quantizer holds three copies of
the float model while it works (it deep-copies the model and reloads it for shape inference while
the first copy is still referenced): a 0.6B decoder's int8 build peaked at 6.6 GB there. This
pass holds the graph, one float weight at a time and the int8 weights it made.
``tests/exporters/test_quantize.py::test_the_dynamic_quantizer_writes_onnxruntimes_graph_weight_for_weight``
proves the weights and the outputs equal onnxruntime's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from packager.exporters.onnx import read_weight, save_beside
from packager.runtime.manifest import SATURATION_FREE_WEIGHT_LIMIT


def quantizable(node: Any, initializers: dict[str, Any]) -> bool:
    """Whether the int8 recipes quantize this node: a MatMul of an activation (not a constant) by
    a 2-D float32 initializer."""
    from onnx import TensorProto

    if node.op_type != "MatMul" or node.domain or len(node.input) != 2:
        return False
    weight = initializers.get(node.input[1])
    return weight is not None and len(weight.dims) == 2 and weight.data_type == TensorProto.FLOAT and \
        node.input[0] not in initializers


def quantize_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D float weight in symmetric int8 per output column (axis 1) within
    +-``SATURATION_FREE_WEIGHT_LIMIT``: the int8 values and the float32 scales, as onnxruntime's
    quantizer computes them (scale = max|column| / limit, 1 for a column whose scale is below
    float32's smallest normal; round half to even)."""
    weight = weight.astype(np.float32, copy=False)
    absmax = np.abs(weight).max(axis=0)
    # onnxruntime divides the float64 range (2 * absmax) by the float64 steps (2 * limit), checks
    # it against float32's smallest normal, then casts.
    wide = absmax.astype(np.float64) * 2 / (2 * SATURATION_FREE_WEIGHT_LIMIT)
    scale = np.where(wide < np.finfo(np.float32).tiny, 1.0, wide).astype(np.float32)
    values = np.clip(np.round(weight / scale), -128, 127).astype(np.int8)
    return values, scale


def quantize_dynamic_matmuls(source: Path, target: Path, excluded: list[str]) -> int:
    """Write ``source`` at ``target`` with every quantizable MatMul but the nodes named in
    ``excluded`` in dynamic int8. The int8 weights go to ``<target>.data``; float weights still
    used stay in ``source``'s data file, so ``target`` must be in the same folder when ``source``
    has one. Returns how many MatMuls were quantized."""
    import onnx
    from onnx import TensorProto, external_data_helper, helper, numpy_helper

    model = onnx.load(source, load_external_data=False)
    if source.parent.resolve() != target.parent.resolve() and \
            any(external_data_helper.uses_external_data(i) for i in model.graph.initializer):
        raise ValueError(f"{target}: must be beside {source}, whose weights stay in its data file")
    _gemms_as_matmuls(model, source.parent)
    initializers = {i.name: i for i in model.graph.initializer}
    skip = set(excluded)
    nodes, added, quantized_weights, quantized_inputs, count = [], [], set(), set(), 0
    for node in model.graph.node:
        if node.name in skip or not quantizable(node, initializers):
            nodes.append(node)
            continue
        x, w, y = node.input[0], node.input[1], node.output[0]
        if x not in quantized_inputs:
            quantized_inputs.add(x)
            nodes.append(helper.make_node("DynamicQuantizeLinear", [x],
                                          [f"{x}_quantized", f"{x}_scale", f"{x}_zero_point"],
                                          f"{x}_QuantizeLinear"))
        if w not in quantized_weights:
            quantized_weights.add(w)
            values, scale = quantize_weight(read_weight(initializers[w], source.parent))
            added += [numpy_helper.from_array(values, f"{w}_quantized"),
                      numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{w}_zero_point"),
                      numpy_helper.from_array(scale, f"{w}_scale")]
        # onnxruntime's names, an unnamed node's included
        name, product, count = f"{node.name}_quant" if node.name else "", f"{y}_output_quantized", count + 1
        scales = f"{name}_scales_mul" if name else f"{x}_scale_{w}_scale_mul"
        nodes += [
            helper.make_node("MatMulInteger", [f"{x}_quantized", f"{w}_quantized", f"{x}_zero_point",
                                               f"{w}_zero_point"], [product], name),
            helper.make_node("Cast", [product], [f"{product}_cast_output"], f"{product}_cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{x}_scale", f"{w}_scale"], [f"{scales}:0"], scales),
            helper.make_node("Mul", [f"{product}_cast_output", f"{scales}:0"], [y],
                             f"{name}_output_scale_mul" if name else ""),
        ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    # the float weights now read by nothing (a weight an excluded MatMul also reads stays)
    used = {name for node in nodes for name in node.input}
    dropped = quantized_weights - used
    kept = [i for i in model.graph.initializer if i.name not in dropped]
    del model.graph.initializer[:]
    model.graph.initializer.extend([*kept, *added])
    save_beside(model, target)
    return count


def _gemms_as_matmuls(model: Any, folder: Path) -> None:
    """Rewrite each ``Gemm`` (alpha 1, beta 1, A not transposed) as ``MatMul`` (+ ``Add`` of its
    bias), as onnxruntime's dynamic quantizer does first: a Dense over a pooled vector exports as
    a Gemm with a transposed weight, which is stored transposed (a weight that is not an
    initializer gets a ``Transpose``). Names are onnxruntime's."""
    from onnx import helper, numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Gemm" or node.domain or attributes.get("alpha", 1.0) != 1.0 or \
                attributes.get("beta", 1.0) != 1.0 or attributes.get("transA", 0):
            nodes.append(node)
            continue
        weight = node.input[1]
        if attributes.get("transB", 0):
            if weight in initializers:
                transposed = numpy_helper.from_array(np.ascontiguousarray(read_weight(initializers[weight], folder).T),
                                                     weight)
                initializers[weight].CopyFrom(transposed)
            else:
                weight = f"{node.input[1]}_Transposed"
                nodes.append(helper.make_node("Transpose", [node.input[1]], [weight],
                                              f"{node.name}_Transpose" if node.name else ""))
        product = f"{node.output[0]}_MatMul" if len(node.input) > 2 else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product],
                                      f"{node.name}_MatMul" if node.name else ""))
        if len(node.input) > 2:
            nodes.append(helper.make_node("Add", [product, node.input[2]], list(node.output),
                                          f"{node.name}_Add" if node.name else ""))
    del model.graph.node[:]
    model.graph.node.extend(nodes)

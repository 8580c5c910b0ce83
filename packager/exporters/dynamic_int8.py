"""The dynamic int8 recipe's quantizer: each weight MatMul rewritten into onnxruntime's dynamic
int8 form, its weight read from disk and quantized one at a time.

The graph is the one onnxruntime's own ``quantize_dynamic`` writes (per-channel, 7-bit weights,
``MatMulConstBOnly``), node for node and value for value, so onnxruntime fuses it into the same
``DynamicQuantizeMatMul`` kernels: the input through one ``DynamicQuantizeLinear`` per
activation, ``MatMulInteger`` with the int8 weight, ``Cast`` to float, and a ``Mul`` by the
input's scale times the weight's per-column scales. onnxruntime's quantizer holds three copies of
the float model while it works (it deep-copies the model and reloads it for shape inference while
the first copy is still referenced): a 0.6B decoder's int8 build peaked at 2.9x its weights
there. This pass holds the graph, one float weight at a time and the int8 weights it made.
``tests/exporters/test_dynamic_int8.py`` proves the weights and the outputs equal onnxruntime's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from packager.runtime.manifest import SATURATION_FREE_WEIGHT_LIMIT


def quantize_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D float weight in symmetric int8 per output column (axis 1) within
    +-``SATURATION_FREE_WEIGHT_LIMIT``: the int8 values and the float32 scales, as onnxruntime's
    quantizer computes them (scale = max|column| / limit, 1 for an all-zero column; round half
    to even)."""
    weight = weight.astype(np.float32, copy=False)
    absmax = np.abs(weight).max(axis=0)
    # onnxruntime divides the float64 range (2 * absmax) by the float64 steps (2 * limit), then casts.
    scale = (absmax.astype(np.float64) * 2 / (2 * SATURATION_FREE_WEIGHT_LIMIT)).astype(np.float32)
    scale[scale < np.finfo(np.float32).tiny] = 1.0
    values = np.clip(np.round(weight / scale), -128, 127).astype(np.int8)
    return values, scale


def quantize_dynamic_matmuls(source: Path, target: Path, excluded: list[str]) -> int:
    """Write ``source`` at ``target`` with every weight MatMul (a 2-D float initializer as its
    second input, an activation as its first) but the nodes named in ``excluded`` in dynamic
    int8. The int8 weights go to ``<target>.data``; float weights still used stay in ``source``'s
    data file, in the same folder. Returns how many MatMuls were quantized."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(source, load_external_data=False)
    folder = str(source.parent)
    initializers = {i.name: i for i in model.graph.initializer}
    skip = set(excluded)
    nodes, added, quantized_weights, quantized_inputs, count = [], [], set(), set(), 0
    for node in model.graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" and not node.domain and \
            node.name not in skip else None
        if weight is None or len(weight.dims) != 2 or weight.data_type != TensorProto.FLOAT or \
                node.input[0] in initializers:
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
            values, scale = quantize_weight(numpy_helper.to_array(weight, base_dir=folder))
            added += [numpy_helper.from_array(values, f"{w}_quantized"),
                      numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{w}_zero_point"),
                      numpy_helper.from_array(scale, f"{w}_scale")]
        name, product, count = f"{node.name}_quant", f"{y}_output_quantized", count + 1
        nodes += [
            helper.make_node("MatMulInteger", [f"{x}_quantized", f"{w}_quantized", f"{x}_zero_point",
                                               f"{w}_zero_point"], [product], name),
            helper.make_node("Cast", [product], [f"{product}_cast_output"], f"{product}_cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{x}_scale", f"{w}_scale"], [f"{name}_scales_mul:0"], f"{name}_scales_mul"),
            helper.make_node("Mul", [f"{product}_cast_output", f"{name}_scales_mul:0"], [y],
                             f"{name}_output_scale_mul"),
        ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input} | {o.name for o in model.graph.output}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend([*kept, *added])
    onnx.save(model, target, save_as_external_data=True, location=f"{target.name}.data")
    return count

"""What x86 int8 kernels compute, for tests that must hold on every CPU.

onnxruntime (MLAS) and OpenVINO (oneDNN) multiply uint8 activations by int8 weights. CPUs with
VNNI or AMX add the products exactly in int32. CPUs without VNNI (AVX2, AVX-512 without VNNI)
use ``vpmaddubsw`` instead: it adds each two adjacent products along the inner dimension into an
int16 with saturation, and ``vpmaddwd`` then adds those in int32. ``u8s8_without_vnni`` is that
arithmetic in numpy. A weight of at most ``SATURATION_FREE_WEIGHT_LIMIT`` in magnitude keeps
every pair inside int16, so both kernels give the same integers; that is what
``assert_saturation_free`` checks of an artifact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from packager.runtime.enums import Int8Arithmetic
from packager.runtime.manifest import SATURATION_FREE_WEIGHT_LIMIT, read_manifest


def u8s8_exact(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``a`` (uint8, [m, k]) times ``w`` (int8, [k, n]) in int32, as VNNI adds them."""
    return a.astype(np.int64) @ w.astype(np.int64)


def u8s8_without_vnni(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The same product as ``vpmaddubsw`` + ``vpmaddwd`` add it: pairs of adjacent products
    saturated to int16 first."""
    a, w = a.astype(np.int64), w.astype(np.int64)
    if a.shape[1] % 2:
        a, w = np.pad(a, ((0, 0), (0, 1))), np.pad(w, ((0, 1), (0, 0)))
    products = a[:, :, None] * w[None, :, :]
    pairs = products[:, 0::2] + products[:, 1::2]
    return np.clip(pairs, -(1 << 15), (1 << 15) - 1).sum(axis=1)


def integer_product_weights(graph: Path) -> dict[str, np.ndarray]:
    """The int8 initializers of an ONNX graph that something other than a Gather reads: the
    weights of its integer products (MatMulInteger, or DequantizeLinear before a MatMul in QDQ
    form), not the int8 embedding tables a Gather looks rows up in."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(graph))
    readers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer
            if i.data_type == TensorProto.INT8 and readers.get(i.name, {"Gather"}) != {"Gather"}}


def openvino_integer_weights(xml: Path) -> dict[str, np.ndarray]:
    """The int8 constants of an OpenVINO IR that reach something other than a Gather through
    their dequantization (NNCF stores quantized weights as i8 constants, then Convert, Subtract,
    Multiply): the weights the CPU plugin multiplies as integers, not the tables it looks up."""
    import openvino as ov

    dequantization = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose"}

    def readers(op) -> set[str]:
        found, todo = set(), [op]
        while todo:
            for target in todo.pop().output(0).get_target_inputs():
                node = target.get_node()
                if node.get_type_name() in dequantization:
                    todo.append(node)
                else:
                    found.add(node.get_type_name())
        return found

    model = ov.Core().read_model(str(xml))
    return {op.get_friendly_name(): op.get_data() for op in model.get_ops()
            if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
            and readers(op) - {"Gather"}}


def assert_saturation_free(artifact: Path) -> int:
    """The int8 artifact records ``Int8Arithmetic.SATURATION_FREE`` and every int8 weight of its
    integer products is within the limit (so no uint8 x int8 pair saturates on any kernel).
    Returns how many weights it checked (a test asserts there were some)."""
    manifest = read_manifest(artifact)
    assert manifest.int8_arithmetic is Int8Arithmetic.SATURATION_FREE, manifest.int8_arithmetic
    weights: dict[str, np.ndarray] = {}
    for route in manifest.routes:
        graph = artifact / route.graph
        weights |= openvino_integer_weights(graph) if graph.suffix == ".xml" else integer_product_weights(graph)
    wide = {name: int(np.abs(w.astype(np.int64)).max()) for name, w in weights.items()
            if w.size and np.abs(w.astype(np.int64)).max() > SATURATION_FREE_WEIGHT_LIMIT}
    assert not wide, f"int8 weights beyond +-{SATURATION_FREE_WEIGHT_LIMIT}: {wide}"
    return len(weights)

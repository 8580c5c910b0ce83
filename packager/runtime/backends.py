"""Graph sessions, one per artifact format, behind the same small interface."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import ArtifactIntegrityError, MissingDependencyError
from .manifest import Format, RouteSpec


class GraphSession(Protocol):
    compiles_per_shape: bool  # keeps kernels and buffers for every input shape it runs (runner.batches)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OnnxSession:
    """An onnxruntime session on CPU. ``run`` is safe to call from several threads at once."""

    compiles_per_shape = False

    def __init__(self, path: Path, output_names: list[str], *, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise MissingDependencyError("ONNX artifacts need onnxruntime: pip install onnxruntime") from e
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # onnxruntime's defaults (CPU arena and memory patterns on): its arena keeps the blocks of the
        # largest batch seen, and runner.MAX_BATCH_TOKENS bounds that batch. Measured over hundreds
        # of calls of varying shapes (benchmarks/bench_memory.py), turning either off saved nothing.
        if threads:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._outputs = output_names

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self._session.run(self._outputs, feeds), strict=True))


class OpenVinoSession:
    """An OpenVINO model compiled for the CPU in f32 with the latency hint (one request at a time uses
    every core; the throughput hint would want many requests in flight). Each thread gets its own
    infer request, so ``run`` is safe to call from several threads at once."""

    compiles_per_shape = True

    def __init__(self, path: Path, output_names: list[str], *, threads: int | None = None) -> None:
        try:
            import openvino as ov
        except ImportError as e:
            raise MissingDependencyError("OpenVINO artifacts need openvino: pip install openvino") from e
        # f32 arithmetic on every CPU, as gated: OpenVINO would pick bf16 on AMX/AVX512_BF16 CPUs
        # and f16 on ARM by itself, and on CPUs with VNNI it would quantize the activations of
        # int8-weight layers to int8 in groups of 32 (a 0.004 change of a unit embedding, measured
        # on the tiny static embedder) where CPUs without VNNI multiply in float.
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                  "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0, **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
        self._compiled = ov.Core().compile_model(str(path), "CPU", config)
        self._outputs = {name: self._compiled.output(name) for name in output_names}
        self._local = threading.local()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        results = request.infer(feeds)
        return {name: np.array(results[port]) for name, port in self._outputs.items()}


_SESSIONS: dict[Format, type[OnnxSession] | type[OpenVinoSession]] = {Format.ONNX: OnnxSession,
                                                                      Format.OPENVINO: OpenVinoSession}


def open_session(root: Path, fmt: Format, route: RouteSpec, *, threads: int | None = None) -> GraphSession:
    try:
        session_class = _SESSIONS[fmt]
    except KeyError:
        raise ArtifactIntegrityError(
            f"this loader cannot run {fmt.value} graphs; it runs: {sorted(f.value for f in _SESSIONS)}"
        ) from None
    try:
        return session_class(root / route.graph, [o.name for o in route.outputs], threads=threads)
    except MissingDependencyError:
        raise
    except Exception as e:  # the engines raise their own types; e.g. external data outside the artifact
        raise ArtifactIntegrityError(
            f"{route.graph}: the {fmt.value} runtime refused this graph: {str(e).strip().splitlines()[-1][:300]}"
        ) from e

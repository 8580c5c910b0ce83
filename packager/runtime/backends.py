"""Graph sessions, one per artifact format, behind the same small interface."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .enums import Format, Int8Arithmetic, Precision
from .errors import ArtifactIntegrityError, MissingDependencyError
from .manifest import Manifest
from .routes import RouteSpec

# OpenVINO's dynamic quantization of int8-weight MatMuls: activations to int8 in groups of this
# many channels, where the CPU has VNNI or AMX (Int8Arithmetic.VNNI_OR_FLOAT_PRODUCTS).
ACTIVATION_GROUP = 32


@dataclass(frozen=True)
class Compute:
    """The arithmetic OpenVINO runs an artifact's graphs in, as its gate measured it: f32, or
    bf16 for a bf16 artifact (OpenVINO would pick bf16 on AMX/AVX512_BF16 CPUs and f16 on ARM by
    itself), and activations quantized in groups (0: never) for an int8 artifact whose gate also
    measured that. onnxruntime's CPU kernels have one arithmetic per graph: this does not apply."""

    precision: str = "f32"
    activation_group: int = 0

    @classmethod
    def of(cls, manifest: Manifest, *, float_products: bool = False) -> Compute:
        quantized = manifest.int8_arithmetic is Int8Arithmetic.VNNI_OR_FLOAT_PRODUCTS and not float_products
        return cls(precision="bf16" if manifest.precision is Precision.BF16 else "f32",
                   activation_group=ACTIVATION_GROUP if quantized else 0)


F32 = Compute()


class GraphSession(Protocol):
    compiles_per_shape: bool  # keeps kernels and buffers for every input shape it runs (batching.batches)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OnnxSession:
    """An onnxruntime session on CPU. ``run`` is safe to call from several threads at once."""

    compiles_per_shape = False

    def __init__(self, path: Path, output_names: list[str], *, threads: int | None = None,
                 compute: Compute = F32) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise MissingDependencyError("ONNX artifacts need onnxruntime: pip install onnxruntime") from e
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # onnxruntime's defaults (CPU arena and memory patterns on): its arena keeps the blocks of the
        # largest batch seen, and batching.MAX_BATCH_TOKENS bounds that batch. Measured over hundreds
        # of calls of varying shapes (benchmarks/bench_memory.py), turning either off saved nothing.
        if threads:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._outputs = output_names

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self._session.run(self._outputs, feeds), strict=True))


# An OpenVINO model is compiled afresh once it has run this many input shapes: its CPU plugin keeps
# kernels and buffers for every shape it runs, and a route the runner cannot bucket (left padding)
# runs one shape per (texts, length) a caller sends. A bucketed text route runs fewer (batching.py:
# 126 at most, for any max_length up to 32768 and any batch_size), so it is never recompiled; a
# vision-language route, bucketed in its patch counts too, can pass the limit and is then compiled
# again, as an unbucketed route is.
SHAPE_LIMIT = 256


class OpenVinoSession:
    """An OpenVINO model compiled for the CPU in the artifact's ``Compute`` with the latency hint (one
    request at a time uses every core; the throughput hint would want many requests in flight).
    Each thread gets its own
    infer request, so ``run`` is safe to call from several threads at once. After SHAPE_LIMIT
    distinct input shapes the model is compiled again and the old one (with what it kept per
    shape) is dropped once no thread's request uses it."""

    compiles_per_shape = True

    def __init__(self, path: Path, output_names: list[str], *, threads: int | None = None,
                 compute: Compute = F32) -> None:
        try:
            import openvino as ov
        except ImportError as e:
            raise MissingDependencyError("OpenVINO artifacts need openvino: pip install openvino") from e
        # Both pinned, as gated. Left to itself, OpenVINO on CPUs with VNNI would quantize the
        # activations of int8-weight layers (a 0.004 change of a unit embedding, measured on the
        # tiny static embedder) where CPUs without VNNI multiply in float.
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": compute.precision,
                  "DYNAMIC_QUANTIZATION_GROUP_SIZE": compute.activation_group,
                  **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
        core = ov.Core()
        self._model = core.read_model(str(path))
        # compiled again from the model read (and verified) at load, never from the files again
        self._compile: Callable[[], tuple[Any, dict[str, Any]]] = \
            lambda: _compiled(core.compile_model(self._model, "CPU", config), output_names)
        self._lock = threading.Lock()
        self._shapes: set[tuple[tuple[str, tuple[int, ...]], ...]] = set()
        self._generation = 0
        self._compiled = self._compile()
        self._local = threading.local()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shape = tuple(sorted((name, value.shape) for name, value in feeds.items()))
        with self._lock:
            if shape not in self._shapes:
                if len(self._shapes) >= SHAPE_LIMIT:
                    self._compiled, self._generation = self._compile(), self._generation + 1
                    self._shapes.clear()
                self._shapes.add(shape)
            (compiled, outputs), generation = self._compiled, self._generation
        local = self._local
        if getattr(local, "generation", None) != generation:
            local.request, local.generation = compiled.create_infer_request(), generation
        results = local.request.infer(feeds)
        return {name: np.array(results[port]) for name, port in outputs.items()}

    @property
    def shapes(self) -> int:
        """Input shapes the current compiled model has run."""
        return len(self._shapes)


def _compiled(compiled: Any, output_names: list[str]) -> tuple[Any, dict[str, Any]]:
    return compiled, {name: compiled.output(name) for name in output_names}


_SESSIONS: dict[Format, type[OnnxSession] | type[OpenVinoSession]] = {Format.ONNX: OnnxSession,
                                                                      Format.OPENVINO: OpenVinoSession}


def open_session(root: Path, fmt: Format, route: RouteSpec, *, threads: int | None, compute: Compute) -> GraphSession:
    try:
        session_class = _SESSIONS[fmt]
    except KeyError:
        raise ArtifactIntegrityError(
            f"this loader cannot run {fmt.value} graphs; it runs: {sorted(f.value for f in _SESSIONS)}"
        ) from None
    try:
        return session_class(root / route.graph, [o.name for o in route.outputs], threads=threads, compute=compute)
    except MissingDependencyError:
        raise
    except Exception as e:  # the engines raise their own types; e.g. external data outside the artifact
        raise ArtifactIntegrityError(
            f"{route.graph}: the {fmt.value} runtime refused this graph: {str(e).strip().splitlines()[-1][:300]}"
        ) from e

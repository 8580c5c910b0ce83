"""Graph sessions, one per artifact format, behind the same small interface."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import ArtifactIntegrityError, MissingDependencyError
from .manifest import Format, RouteSpec


class GraphSession(Protocol):
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OnnxSession:
    """An onnxruntime session on CPU. ``run`` is safe to call from several threads at once."""

    def __init__(self, path: Path, output_names: list[str], *, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise MissingDependencyError("ONNX artifacts need onnxruntime: pip install onnxruntime") from e
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._outputs = output_names

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self._session.run(self._outputs, feeds)))


_SESSIONS = {Format.ONNX: OnnxSession}


def open_session(root: Path, fmt: Format, route: RouteSpec, *, threads: int | None = None) -> GraphSession:
    try:
        session_class = _SESSIONS[fmt]
    except KeyError:
        raise ArtifactIntegrityError(
            f"this loader cannot run {fmt.value} graphs; it runs: {sorted(f.value for f in _SESSIONS)}"
        ) from None
    return session_class(root / route.graph, [o.name for o in route.outputs], threads=threads)

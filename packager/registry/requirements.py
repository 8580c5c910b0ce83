"""The pip requirements of a registered version: the loader's dependencies for the artifact's
format, and the packages its manifest requires, from the versions the parity gate ran with up to
their next breaking release. No mlflow here."""

from __future__ import annotations

import re
from importlib.metadata import version as package_version

from packager.runtime.enums import Format


def runtime_requirements(fmt: Format = Format.ONNX, requires: tuple[str, ...] = ()) -> list[str]:
    """The loader's dependencies for one artifact format and the extra packages its manifest
    requires (jinja2 for chat templates), from the versions the parity gate ran with up to the
    next release that may break them (the next major; the next minor of a 0.x package). Exact
    pins would make MLflow warn wherever a service or a Spark worker has a later patch release."""
    engine = {Format.ONNX: "onnxruntime", Format.OPENVINO: "openvino"}[fmt]
    return [f"{name}>={package_version(name)},<{_next_breaking(package_version(name))}"
            for name in ("numpy", "tokenizers", engine, *requires)]


def _next_breaking(installed: str) -> str:
    """``2.4.6`` -> ``3``, ``0.23.3`` -> ``0.24``, ``2026.4.1`` -> ``2027``."""
    parts = [int(p) for p in re.findall(r"\d+", installed)[:2]] + [0]
    return f"0.{parts[1] + 1}" if parts[0] == 0 else str(parts[0] + 1)

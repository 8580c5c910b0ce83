"""The machine a benchmark ran on: its CPU, the instruction sets the engines' kernels choose by,
and the engines' versions. Speed figures from two machines are not comparable (this project's
hosts have been an AVX2 EPYC without VNNI and an AVX-512 EPYC with VNNI and bf16, under the same
name), so every figure is reported with the host it was measured on.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from dataclasses import dataclass
from pathlib import Path

# The CPU features that change which kernels onnxruntime and OpenVINO run: wide vectors, int8 dot
# products (VNNI: int8 MatMuls without saturation work-arounds, OpenVINO's dynamic quantization),
# bf16 (OpenVINO's default precision where present) and AMX tiles. /proc/cpuinfo's names.
FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class Host:
    """The CPU model, the CPUs this process may run on, which of ``FEATURES`` the CPU has (None
    where the system does not say: no procfs), the engines' versions (None: not installed), and the
    precision OpenVINO's CPU plugin computes in when a caller does not pin one
    (sentence-transformers' OpenVINO backend does not: on a bf16 CPU its "fp32" model computes in
    bf16)."""

    cpu: str
    cpus: int
    features: tuple[str, ...] | None
    onnxruntime: str | None
    openvino: str | None
    openvino_default_precision: str | None

    def summary(self) -> str:
        """One line: ``host: AMD EPYC, 2 CPUs (avx2 fma ...); onnxruntime 1.x, openvino 2026.x;
        OpenVINO computes in bf16 unless pinned``."""
        if self.features is None:
            shown = "features unknown"
        else:
            shown = " ".join(self.features) or f"none of {' '.join(FEATURES)}"
        engines = ", ".join(f"{name} {version}" for name, version in
                            (("onnxruntime", self.onnxruntime), ("openvino", self.openvino)) if version)
        default = f"; OpenVINO computes in {self.openvino_default_precision} unless pinned" \
            if self.openvino_default_precision else ""
        return f"host: {self.cpu}, {self.cpus} CPUs ({shown}); {engines or 'no engines'}{default}"


def describe_host(cpuinfo: Path = Path("/proc/cpuinfo")) -> Host:
    """This machine, read now."""
    model, flags = _cpuinfo(cpuinfo)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return Host(cpu=model or platform.processor() or platform.machine(), cpus=cpus,
                features=None if flags is None else tuple(f for f in FEATURES if f in flags),
                onnxruntime=_version("onnxruntime"), openvino=_version("openvino"),
                openvino_default_precision=_openvino_default_precision())


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The CPU's feature flags as /proc/cpuinfo names them; None where the system does not say."""
    return _cpuinfo(cpuinfo)[1]


def _cpuinfo(path: Path) -> tuple[str | None, set[str] | None]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, None
    model, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model is None:
            model = value.strip()
        elif key.strip() == "flags" and flags is None:
            flags = set(value.split())
    return model, flags


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _openvino_default_precision() -> str | None:
    try:
        import openvino as ov
    except ImportError:
        return None
    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()

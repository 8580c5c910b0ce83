"""OpenVINO IR (model.xml + model.bin) of the whole chain, converted from the plain (unfused)
ONNX export: OpenVINO's own frontend then fuses for its CPU plugin. fp16 stores the weights in
half precision (the CPU computes in fp32 where it lacks fp16 arithmetic); bf16 keeps the fp32 IR
and has the loader compute in bf16; int8 goes through NNCF, either weights and activations
(post-training quantization, transformer mode) or weights only."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packager.bench.host import cpu_flags
from packager.errors import ExportError
from packager.exporters.onnx import export_onnx
from packager.exporters.recipe import RecipeContext, RecipeResult, calibration_feeds
from packager.progress import step
from packager.quiet import quiet
from packager.runtime.enums import Format, Int8Arithmetic, Precision
from packager.scratch import scratch_dir

if TYPE_CHECKING:
    from packager.chain.graph import RouteGraph

log = logging.getLogger(__name__)


# OpenVINO names the nodes it makes (converting, folding constants while saving) after their type
# and a counter shared by the whole process ("Constant_18", or "Constant_57684" after other
# conversions), so the same route saved other bytes after other builds in the process.
_NUMBERED = re.compile(r"[A-Za-z0-9]+_[0-9]+")
# NNCF names what it adds after the node it works on: "Transpose_23656/zero_point".
_NUMBERED_PREFIX = re.compile(r"(?P<stem>(?P<type>[A-Za-z0-9]+)_[0-9]+)(?P<rest>/.+)")
_ONNX_NAMES = ("val_", "node_")  # the exporter's own numbering, made per graph


def canonical_names(model: Any) -> Any:
    """``model`` with every OpenVINO-numbered node renamed by its type and its place in the
    graph's order, and every name made from one (NNCF's) by the place where that number first
    appears. Friendly names are labels: inputs and outputs are found by tensor names."""
    stems: dict[str, str] = {}
    for index, op in enumerate(model.get_ordered_ops()):
        name = op.get_friendly_name()
        if name.startswith(_ONNX_NAMES):
            continue
        if _NUMBERED.fullmatch(name):
            op.set_friendly_name(f"{op.get_type_name()}_{index}")
        elif match := _NUMBERED_PREFIX.fullmatch(name):
            stem = stems.setdefault(match["stem"], f"{match['type']}_at{index}")
            op.set_friendly_name(f"{stem}{match['rest']}")
    return model


class _OpenVinoRecipe:
    name: str
    precision: Precision
    format = Format.OPENVINO
    calibrates = False
    compress_to_fp16 = False
    int8_arithmetic: Int8Arithmetic | None = None

    def export(self, graph: RouteGraph, dest: Path, *, stem: str, context: RecipeContext) -> RecipeResult:
        import openvino as ov

        with scratch_dir("openvino") as scratch:
            source = Path(scratch) / "model.onnx"
            export_onnx(graph, source, fuse=False)
            try:
                with quiet("nncf", output=True):  # NNCF draws progress bars and tables
                    model, details = self.transform(ov.convert_model(str(source)), graph, dest=dest, context=context)
                    target = dest / f"{stem}.xml"
                    saved = Path(scratch) / "model.xml"
                    ov.save_model(model, str(saved), compress_to_fp16=self.compress_to_fp16)
                    # saved as it is read back: compressing or not is already done
                    ov.save_model(canonical_names(ov.Core().read_model(str(saved))), str(target),
                                  compress_to_fp16=False)
                    # fail here, not in the gate, if it cannot run
                    ov.Core().compile_model(str(target), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            except Exception as e:
                raise ExportError(f"route {graph.name!r}: {self.name} failed: {type(e).__name__}: {e}") from e
        return RecipeResult(files=[target.name, target.with_suffix(".bin").name], details=details)

    def transform(self, model: Any, graph: RouteGraph, *, dest: Path, context: RecipeContext) -> tuple[Any, dict]:
        return model, {}


class OpenVinoFp32(_OpenVinoRecipe):
    name = "openvino-fp32"
    precision = Precision.FP32


class OpenVinoBf16(_OpenVinoRecipe):
    """The fp32 IR, which the loader has OpenVINO compute in bf16 (``Compute``): bf16 products,
    f32 sums, on CPUs with bf16 arithmetic; OpenVINO computes in f32 on the others. The registry
    refuses it on a build host without bf16 (its gate would measure f32)."""

    name = "openvino-bf16"
    precision = Precision.BF16


class OpenVinoFp16(_OpenVinoRecipe):
    name = "openvino-fp16"
    precision = Precision.FP16
    compress_to_fp16 = True


class OpenVinoInt8(_OpenVinoRecipe):
    """NNCF post-training quantization: int8 weights and activations, ranges from calibration.
    NNCF's overflow fix on every layer (not only the first, its default) keeps each weight
    within half the int8 range, so CPUs with and without VNNI compute the same integers
    (``Int8Arithmetic.SATURATION_FREE``)."""

    name = "openvino-int8-nncf"
    precision = Precision.INT8
    calibrates = True
    int8_arithmetic: Int8Arithmetic | None = Int8Arithmetic.SATURATION_FREE

    def transform(self, model: Any, graph: RouteGraph, *, dest: Path, context: RecipeContext) -> tuple[Any, dict]:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

        feeds, inputs = calibration_feeds(graph, dest, context)  # texts, or an image route's images
        with step(f"calibration: NNCF on {len(inputs)} inputs"):
            quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                                      preset=nncf.QuantizationPreset.MIXED, subset_size=len(inputs),
                                      advanced_parameters=AdvancedQuantizationParameters(
                                          overflow_fix=OverflowFix.ENABLE))
        return quantized, {"nncf": "quantize, transformer model type, mixed preset, overflow fix on every layer"}


class OpenVinoInt8WeightsOnly(_OpenVinoRecipe):
    """NNCF weight compression: int8 weights (asymmetric, per channel). Built on a CPU with VNNI,
    the artifact also quantizes its activations where the server has VNNI, and the gate measures
    that and the float products of CPUs without it (``Int8Arithmetic.VNNI_OR_FLOAT_PRODUCTS``);
    built elsewhere, it multiplies in float on every CPU."""

    name = "openvino-int8-weights"
    precision = Precision.INT8

    @property
    def int8_arithmetic(self) -> Int8Arithmetic | None:  # type: ignore[override]
        return Int8Arithmetic.VNNI_OR_FLOAT_PRODUCTS if vnni() else Int8Arithmetic.FLOAT_PRODUCTS

    def transform(self, model: Any, graph: RouteGraph, *, dest: Path, context: RecipeContext) -> tuple[Any, dict]:
        import nncf

        return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM), {
            "nncf": "compress_weights, int8 asymmetric"}


# The instruction sets with exact int8 dot products, where OpenVINO quantizes activations.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def vnni() -> bool:
    """Whether this CPU sums int8 products exactly (VNNI or AMX), as /proc/cpuinfo says."""
    return bool((cpu_flags() or set()) & VNNI_FLAGS)


def bf16_arithmetic() -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 on this CPU."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")

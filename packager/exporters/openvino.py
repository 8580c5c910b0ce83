"""OpenVINO IR (model.xml + model.bin) of the whole chain, converted from the plain (unfused)
ONNX export: OpenVINO's own frontend then fuses for its CPU plugin. fp16 stores the weights in
half precision (the CPU computes in fp32 where it lacks fp16 arithmetic); int8 goes through NNCF,
either weights and activations (post-training quantization, transformer mode) or weights only."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Any

from packager.errors import ExportError
from packager.exporters import RecipeContext, RecipeResult, calibration_feeds
from packager.progress import step
from packager.exporters.onnx import export_onnx
from packager.graph import RouteGraph
from packager.runtime.manifest import Format, Precision

log = logging.getLogger(__name__)


class _OpenVinoRecipe:
    format = Format.OPENVINO
    calibrates = False
    compress_to_fp16 = False

    def export(self, graph: RouteGraph, dest: Path, *, stem: str, context: RecipeContext) -> RecipeResult:
        import openvino as ov

        with tempfile.TemporaryDirectory(prefix="packager-openvino-") as scratch:
            source = Path(scratch) / "model.onnx"
            export_onnx(graph, source, fuse=False)
            try:
                with _quiet():
                    model, details = self.transform(ov.convert_model(str(source)), graph, dest, context)
                    target = dest / f"{stem}.xml"
                    ov.save_model(model, str(target), compress_to_fp16=self.compress_to_fp16)
                    # fail here, not in the gate, if it cannot run
                    ov.Core().compile_model(str(target), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            except Exception as e:
                raise ExportError(f"route {graph.name!r}: {self.name} failed: {type(e).__name__}: {e}") from e
        return RecipeResult(files=[target.name, target.with_suffix(".bin").name], details=details)

    def transform(self, model: Any, graph: RouteGraph, dest: Path, context: RecipeContext) -> tuple[Any, dict]:
        return model, {}


class OpenVinoFp32(_OpenVinoRecipe):
    name = "openvino-fp32"
    precision = Precision.FP32


class OpenVinoFp16(_OpenVinoRecipe):
    name = "openvino-fp16"
    precision = Precision.FP16
    compress_to_fp16 = True


class OpenVinoInt8(_OpenVinoRecipe):
    """NNCF post-training quantization: int8 weights and activations, ranges from calibration."""

    name = "openvino-int8-nncf"
    precision = Precision.INT8
    calibrates = True

    def transform(self, model: Any, graph: RouteGraph, dest: Path, context: RecipeContext) -> tuple[Any, dict]:
        import nncf

        feeds, _ = calibration_feeds(graph, dest, context)
        with step(f"calibration: NNCF on {len(context.calibration)} inputs"):
            quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                                      preset=nncf.QuantizationPreset.MIXED,
                                      subset_size=sum(len(f["input_ids"]) for f in feeds))
        return quantized, {"nncf": "quantize, transformer model type, mixed preset"}


class OpenVinoInt8WeightsOnly(_OpenVinoRecipe):
    """NNCF weight compression: int8 weights (asymmetric, per channel), activations in float."""

    name = "openvino-int8-weights"
    precision = Precision.INT8

    def transform(self, model: Any, graph: RouteGraph, dest: Path, context: RecipeContext) -> tuple[Any, dict]:
        import nncf

        return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM), {
            "nncf": "compress_weights, int8 asymmetric"}


@contextlib.contextmanager
def _quiet():
    """NNCF draws progress bars and tables on the terminal; the build logs its own progress."""
    import nncf

    level = nncf.get_log_level() if hasattr(nncf, "get_log_level") else logging.INFO
    nncf.set_log_level(logging.ERROR)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        nncf.set_log_level(level)

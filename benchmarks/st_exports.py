"""sentence-transformers' own ONNX/OpenVINO exports of a model, fp32 and int8, for the benchmark.

Runs in the environment that has sentence-transformers' optimum-based backends (see
setup_st_backends.sh): optimum pins transformers < 4.58, which rules out sentence-transformers 6
beside it.

    python benchmarks/st_exports.py MODEL_FOLDER WORK_DIR   # prints the targets as JSON
"""

import json
import shutil
import sys
import warnings
from pathlib import Path

warnings.simplefilter("ignore")


def main() -> None:
    source, work = Path(sys.argv[1]), Path(sys.argv[2])
    folder = work / "st-model"
    if not folder.exists():
        shutil.copytree(source, folder)
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    onnx = SentenceTransformer(str(folder), backend="onnx", device="cpu")
    onnx.save_pretrained(str(folder))  # onnx/model.onnx
    export_dynamic_quantized_onnx_model(onnx, "avx2", str(folder))
    int8 = next((folder / "onnx").glob("model_*int8_avx2.onnx"))  # its name says quint8 or qint8 by version
    openvino = SentenceTransformer(str(folder), backend="openvino", device="cpu")
    openvino.save_pretrained(str(folder))  # openvino/openvino_model.xml
    # Its int8 OpenVINO export (export_static_quantized_openvino_model) calibrates on GLUE SST-2
    # fetched from the Hugging Face hub with `datasets`: not measured on a machine without the hub.
    print(json.dumps({
        "st onnx fp32": ["st-onnx", f"{folder}:onnx/model.onnx"],
        "st onnx int8 (avx2 dynamic)": ["st-onnx", f"{folder}:onnx/{int8.name}"],
        "st openvino fp32": ["st-openvino", f"{folder}:openvino/openvino_model.xml"],
    }))


if __name__ == "__main__":
    main()

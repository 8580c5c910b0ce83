#!/usr/bin/env bash
# A separate environment with sentence-transformers' own ONNX/OpenVINO backends (optimum), for
# the benchmark's comparison: optimum-onnx pins transformers < 4.58, so it resolves to
# sentence-transformers 5.x, which cannot live beside this project's sentence-transformers 6.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv-st-backends/bin/python ] || "$python" -m venv .venv-st-backends
pip=(.venv-st-backends/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q torch==2.13.0
"${pip[@]}" install -q "sentence-transformers[onnx,openvino]"

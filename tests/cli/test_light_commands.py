"""The commands a service or a release job runs without building import no torch: inspecting an
artifact, listing, promoting and pulling registered versions (they need the manifest, the
runtime and mlflow, not the build side's heavy libraries)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from packager.registry.mlflow_store import MlflowStore

HEAVY = ("torch", "transformers", "sentence_transformers", "onnx", "onnxscript", "openvino", "nncf")


def test_inspect_list_promote_and_pull_import_no_torch(tiny_artifacts, tmp_path):
    artifact = tiny_artifacts["mean"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowStore(uri).register(artifact, "light")
    commands = [["inspect", str(artifact)], ["list", "light", "--tracking-uri", uri],
                ["promote", "light", "--from-alias", "candidate", "--alias", "champion", "--tracking-uri", uri],
                ["pull", "models:/light@champion", "--out", str(tmp_path / "pulled"), "--tracking-uri", uri]]
    code = textwrap.dedent(f"""
        import contextlib, io, json, sys
        from packager.cli import main
        codes = []
        for argv in {commands!r}:
            with contextlib.redirect_stdout(io.StringIO()):
                codes.append(main(argv))
        print(json.dumps({{"codes": codes, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"codes": [0, 0, 0, 0], "heavy": []}
    assert (tmp_path / "pulled" / "mean-onnx-fp32" / "manifest.json").is_file()

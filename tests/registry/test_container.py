"""The container recipe of a registered version: ``mlflow models generate-dockerfile`` writes a
build context (a Dockerfile and the version's model directory) that installs mlflow and the
runtime's requirements, and nothing that pulls in torch or transformers. Docker is not needed: the
check reads what the image would install, and walks those packages' dependencies through the
metadata of this environment (which has torch and transformers, so a dependency on them would be
found)."""

from __future__ import annotations

import os
import re
import subprocess
from importlib.metadata import PackageNotFoundError, distribution
from importlib.metadata import version as package_version

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mlflow_servers import MLFLOW
from packager.registry.mlflow_store import MlflowStore
from packager.registry.requirements import runtime_requirements
from packager.runtime.manifest import read_manifest

NEVER = {"torch", "transformers", "sentence-transformers", "optimum", "torchvision"}
# What MLflow's Dockerfile installs besides the version's requirements: mlflow itself, and
# gunicorn[gevent] (mlflow.models.container._install_pyfunc_deps) for the server.
SERVER = ("gunicorn[gevent]",)


def test_the_generated_build_context_installs_the_runtime_and_mlflow_and_no_torch(tmp_path, tiny_artifacts):
    artifact = tiny_artifacts["mean"]
    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowStore(registry).register(artifact, "my-embedder")
    context = tmp_path / "context"
    subprocess.run([str(MLFLOW), "models", "generate-dockerfile", "-m", "models:/my-embedder/1", "-d", str(context)],
                   check=True, capture_output=True, cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": registry})

    dockerfile = (context / "Dockerfile").read_text()
    # what the image runs pip for: mlflow, then the model directory's own requirements (locally, no conda)
    assert re.findall(r"^RUN pip install (.+)$", dockerfile, re.M) == [f"mlflow=={package_version('mlflow')}"]
    assert "_install_pyfunc_deps('/opt/ml/model', install_mlflow=False, env_manager='local')" in dockerfile
    model = context / "model_dir"
    manifest = read_manifest(model / "artifacts" / artifact.name)
    want = {canonicalize_name(Requirement(r).name): str(Requirement(r).specifier)
            for r in runtime_requirements(manifest.format, manifest.requires)}
    requirements = [Requirement(r) for r in (model / "requirements.txt").read_text().split()]
    assert {canonicalize_name(r.name): str(r.specifier) for r in requirements} == \
           {**want, "mlflow": f"=={package_version('mlflow')}"}
    # the environment files say the same (python_env.yaml points at requirements.txt)
    assert yaml.safe_load((model / "python_env.yaml").read_text())["dependencies"] == ["-r requirements.txt"]
    conda_pip = next(d["pip"] for d in yaml.safe_load((model / "conda.yaml").read_text())["dependencies"]
                     if isinstance(d, dict))
    assert sorted(map(str, map(Requirement, conda_pip))) == sorted(map(str, requirements))

    installed, missing = _closure([*requirements, *map(Requirement, SERVER)])
    assert not installed & NEVER, sorted(installed & NEVER)
    assert {"mlflow", "onnxruntime", "tokenizers", "numpy"} <= installed
    assert missing <= {"gevent", "greenlet", "zope-event", "zope-interface"}, missing  # gunicorn's extra, not here


def _closure(roots: list[Requirement]) -> tuple[set[str], set[str]]:
    """The names of every package ``roots`` pull in, by this environment's metadata (markers
    evaluated here, extras followed where a requirement asks for them), and those not installed."""
    seen: set[tuple[str, frozenset[str]]] = set()
    missing: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in roots]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            missing.add(name)
            continue
        for line in requires:
            dependency = Requirement(line)
            env = [{"extra": e} for e in extras] or [{"extra": ""}]
            if dependency.marker is None or any(dependency.marker.evaluate(e) for e in env):
                todo.append((dependency, frozenset(dependency.extras)))
    return {name for name, _ in seen} - missing, missing

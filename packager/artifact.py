"""Artifact directories on disk: staged next to their target, sealed with a manifest written
last, swapped into place by rename. A reader sees the previous complete artifact or the new
complete one, never a half-written directory.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from types import ModuleType

import packager.runtime
from packager.runtime.errors import ArtifactIntegrityError
from packager.runtime.integrity import artifact_files, digest_files, verify_artifact
from packager.runtime.manifest import MANIFEST_FILE, Manifest

LOADER_DIR = "loader"
README_FILE = "README.md"
_STAGE_PREFIX = ".stage-"
_OLD_MARKER = "-old-"


def new_stage(out: Path, name: str) -> Path:
    """A fresh staging directory inside ``out`` (same filesystem, so publishing is a rename)."""
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_stages(out)
    stage = Path(tempfile.mkdtemp(prefix=f"{_STAGE_PREFIX}{os.getpid()}-{name}-", dir=out))
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)  # mkdtemp makes it private; the artifact should read like any directory
    return stage


def remove_stale_stages(out: Path) -> None:
    """Clean up after builds that were killed (their process is gone): remove their staging
    directories, and put back a previous artifact caught between the two renames of a swap."""
    for stage in out.glob(f"{_STAGE_PREFIX}*"):
        pid, _, rest = stage.name[len(_STAGE_PREFIX):].partition("-")
        if not pid.isdigit() or _alive(int(pid)):
            continue
        target_name, marker, _ = rest.rpartition(_OLD_MARKER)
        if marker and not (out / target_name).exists():
            os.rename(stage, out / target_name)
        else:
            shutil.rmtree(stage, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def copy_loader(stage: Path) -> None:
    """The runtime package, copied in as the artifact's own ``loader`` package."""
    source = Path(packager.runtime.__file__).parent
    shutil.copytree(source, stage / LOADER_DIR, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def seal(stage: Path, manifest: Manifest) -> Manifest:
    """Write the README from ``manifest``, digest every file in ``stage`` and write the manifest
    with those digests, last."""
    (stage / README_FILE).write_text(readme_text(manifest), encoding="utf-8")
    sealed = dataclasses.replace(manifest, files=digest_files(stage, artifact_files(stage)))
    (stage / MANIFEST_FILE).write_text(sealed.to_json(), encoding="utf-8")
    return sealed


def publish(stage: Path, target: Path, manifest: Manifest) -> None:
    """Verify the staged artifact, then swap it into ``target``; a previous artifact there is
    replaced only now, after the new one is complete."""
    verify_artifact(stage, manifest)
    if not target.exists():
        os.rename(stage, target)
        return
    old = target.with_name(f"{_STAGE_PREFIX}{os.getpid()}-{target.name}{_OLD_MARKER}{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    os.rename(stage, target)
    shutil.rmtree(old, ignore_errors=True)


def import_loader(artifact: Path) -> ModuleType:
    """The artifact's own ``loader`` package, imported by path under a unique module name.
    (``registry/pyfunc.py`` holds the same few lines: it runs where ``packager`` is absent.)"""
    package = artifact / LOADER_DIR
    if not (package / "__init__.py").is_file() or not (artifact / MANIFEST_FILE).is_file():
        raise ArtifactIntegrityError(f"{artifact}: not a packaged artifact (no {MANIFEST_FILE} or {LOADER_DIR}/)")
    spec = importlib.util.spec_from_file_location(
        f"packager_loader_{uuid.uuid4().hex}", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in the artifact
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writes_bytecode
    return module


def readme_text(manifest: Manifest) -> str:
    """A short model card: what the artifact is, how it was checked, how to load it."""
    route = manifest.routes[0]
    parity = manifest.parity
    metrics = "\n".join(f"| {k} | {v:.8g} |" for k, v in sorted(parity.metrics.items())) or "| (pending) | |"
    return f"""# {manifest.name}

A {manifest.chain_kind.value} chain ({" -> ".join(m.kind for m in manifest.modules)}) compiled into one
{manifest.format.value} graph ({manifest.precision.value}) by chain-packager. Source: `{manifest.source.location}`
(sha256 of its files `{manifest.source.sha256[:16]}...`). Built {manifest.built_at}.

Inputs: {", ".join(route.inputs)}; tokenizer max length {route.tokenizer.max_length}, padding {route.tokenizer.padding_side.value}.
Output: {", ".join(f"{o.name} {list(o.shape)}" for o in route.outputs)}; similarity: {manifest.similarity.value}.

## Parity with the torch reference: {parity.status.value}

Reference: sentence-transformers on the source folder; candidate: this directory's own loader,
text in, embedding out, over {parity.texts} texts. Gate: {", ".join(f"{k} >= {v}" for k, v in parity.gate.items()) or "-"}.

| metric | value |
|---|---|
{metrics}

## Load it

Needs only `numpy`, `tokenizers` and `onnxruntime` (no torch):

```python
import sys; sys.path.insert(0, "path/to/{manifest.name}")
from loader import load
model = load("path/to/{manifest.name}")   # verifies every file's sha256 first
embeddings = model.encode(["some text"], batch_size=32)
```

With chain-packager installed, `packager.runtime.load(path)` does the same; a registered version
loads with `mlflow.pyfunc.load_model("models:/NAME@champion").predict(["some text"])`.
"""

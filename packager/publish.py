"""Artifact directories on disk: staged next to their target, sealed with a manifest written
last, synced, and swapped into place in one atomic exchange (Linux ``renameat2``). A reader sees
the previous complete artifact or the new complete one, never a half-written directory, and a
build killed at any point leaves one of the two at the target.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import importlib.util
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from types import ModuleType

import packager.runtime
from packager.errors import ArtifactIntegrityError
from packager.failpoints import failpoint
from packager.runtime.integrity import PYCACHE_PLACEHOLDER, artifact_files, digest_files, verify_artifact
from packager.runtime.manifest import MANIFEST_FILE, Manifest, read_manifest
from packager.scratch import owner_gone

LOADER_DIR = "loader"
README_FILE = "README.md"
PARITY_FILE = "parity.json"
# Work in progress and artifacts set aside during a swap: "<prefix><pid>-<name>-<random>".
_STAGE_PREFIX = ".stage-"
_OLD_PREFIX = ".old-"


def new_stage(out: Path, name: str) -> Path:
    """A fresh staging directory inside ``out`` (same filesystem, so publishing is a rename)."""
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_stages(out)
    stage = Path(tempfile.mkdtemp(prefix=f"{_STAGE_PREFIX}{os.getpid()}-{name}-", dir=out))
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)  # mkdtemp makes it private; an artifact should read like any directory
    return stage


def remove_stale_stages(out: Path) -> None:
    """Clean up after builds that were killed (their process is gone): remove their staging
    directories, and put back a previous artifact caught between the two renames of a swap."""
    for path in out.iterdir():
        for prefix in (_STAGE_PREFIX, _OLD_PREFIX):
            if not owner_gone(path.name, prefix):
                continue
            rest = path.name[len(prefix):].partition("-")[2]
            target = out / rest.rpartition("-")[0]
            if prefix == _OLD_PREFIX and not target.exists():
                os.rename(path, target)
            else:
                shutil.rmtree(path, ignore_errors=True)


def copy_loader(stage: Path) -> None:
    """The runtime package, copied in as the artifact's own ``loader`` package, with the empty
    ``__pycache__`` file that keeps Python from writing or reading bytecode there, in it and in
    each of its subpackages (``chat``)."""
    source = Path(packager.runtime.__file__).parent
    shutil.copytree(source, stage / LOADER_DIR, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for package in (stage / LOADER_DIR).glob("**/__init__.py"):
        (package.parent / PYCACHE_PLACEHOLDER).touch()


def seal(stage: Path, manifest: Manifest, *, readme: str | None = None) -> Manifest:
    """Write ``readme`` (the model card) if given, digest every file in ``stage`` and write the
    manifest with those digests, last."""
    if readme is not None:
        (stage / README_FILE).write_text(readme, encoding="utf-8")
    with_files = dataclasses.replace(manifest, files=digest_files(stage, artifact_files(stage)))
    parsed = Manifest.from_json(with_files.to_json())  # the digest is of what a reader will parse
    sealed = dataclasses.replace(parsed, sealed_sha256=parsed.content_digest())
    (stage / MANIFEST_FILE).write_text(sealed.to_json(), encoding="utf-8")
    return sealed


def publish(stage: Path, target: Path, manifest: Manifest) -> None:
    """Verify and sync the staged artifact, then swap it into ``target``: in one atomic exchange
    where the system can (the stage then holds the previous artifact, removed after); elsewhere
    by two renames, the previous artifact set aside only now and put back if the second fails
    (or by the next build, if this one is killed between them)."""
    verify_artifact(stage, manifest)
    _sync_tree(stage)
    if not target.exists():
        os.rename(stage, target)
        _sync_dir(target.parent)
        return
    if _exchange(stage, target):
        failpoint("artifact.exchanged")
        _sync_dir(target.parent)
        shutil.rmtree(stage, ignore_errors=True)
        return
    old = target.with_name(f"{_OLD_PREFIX}{os.getpid()}-{target.name}-{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    failpoint("artifact.set_aside")
    try:
        os.rename(stage, target)
    except OSError:
        os.rename(old, target)
        raise
    _sync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False where the C library,
    kernel or filesystem has no such call (the caller falls back to two renames)."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if os.name == "posix" else None
    if renameat2 is None or os.environ.get("PACKAGER_NO_EXCHANGE"):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _sync_tree(root: Path) -> None:
    """fsync every file and directory, so a power loss after the rename cannot leave truncated files."""
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        else:
            _sync_dir(path)
    _sync_dir(root)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verified_manifest(artifact: Path) -> Manifest:
    """The manifest of a packaged artifact whose files all match it, checked by *this* (trusted)
    runtime; a directory without a manifest and a loader is not an artifact."""
    if not (artifact / MANIFEST_FILE).is_file() or not (artifact / LOADER_DIR / "__init__.py").is_file():
        raise ArtifactIntegrityError(f"{artifact}: not a packaged artifact (no {MANIFEST_FILE} or {LOADER_DIR}/)")
    manifest = read_manifest(artifact)
    verify_artifact(artifact, manifest)
    return manifest


def import_loader(artifact: Path) -> ModuleType:
    """The artifact's own ``loader`` package, imported by path under a unique module name, after
    its files were verified (``verified_manifest``): a tampered loader must not get to run
    before the check. Bytecode caches are neither read from nor written to the artifact.
    (``registry/pyfunc.py`` holds a variant of these lines: it runs where ``packager`` is absent.)"""
    verified_manifest(artifact)
    package = artifact / LOADER_DIR
    spec = importlib.util.spec_from_file_location(
        f"packager_loader_{uuid.uuid4().hex}", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"{package}: not an importable package")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    saved = sys.pycache_prefix, sys.dont_write_bytecode
    with tempfile.TemporaryDirectory(prefix="packager-pycache-") as cache:
        sys.pycache_prefix, sys.dont_write_bytecode = cache, True
        try:
            spec.loader.exec_module(module)
        finally:
            sys.pycache_prefix, sys.dont_write_bytecode = saved
    return module

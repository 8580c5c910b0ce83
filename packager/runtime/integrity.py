"""File digests: the build side records them, the loader verifies them before it runs anything."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .errors import ArtifactIntegrityError
from .manifest import MANIFEST_FILE, FileDigest, Manifest

_CHUNK = 1 << 20
# Python writes bytecode next to the loader package when it is imported from the artifact
# (`from loader import load`); such caches are tolerated, anything else in a __pycache__ is not.
_CACHE_DIR = "__pycache__"
_BYTECODE = re.compile(r"^(?P<package>.+)/__pycache__/(?P<module>\w+)\.[\w.-]+\.pyc$")
_UNCHECKED_HASH_PYC = 1  # pyc flags: hash-based and never checked against its source


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_files(root: Path) -> list[str]:
    """Every regular file under ``root`` except the manifest and bytecode caches, as sorted
    '/'-separated paths."""
    return _split(_all_files(root))[0]


def _split(files: list[str]) -> tuple[list[str], list[str]]:
    """(artifact files without the manifest, bytecode cache files)."""
    caches = [p for p in files if _CACHE_DIR in p.split("/")]
    return [p for p in files if p not in caches and p != MANIFEST_FILE], caches


def _all_files(root: Path) -> list[str]:
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise ArtifactIntegrityError(f"{root}: {rel} is a link or special file; artifacts hold regular files only")
        if path.is_file():
            found.append(rel)
    return sorted(found)


def _foreign_bytecode(root: Path, caches: list[str], listed: set[str]) -> list[str]:
    """Cache files Python would not have written for the listed sources: other names, or pycs
    that Python runs without comparing them to their source."""
    foreign = []
    for rel in caches:
        match = _BYTECODE.match(rel)
        if not match or f"{match['package']}/{match['module']}.py" not in listed:
            foreign.append(rel)
            continue
        with open(root / rel, "rb") as f:
            header = f.read(8)
        if len(header) < 8 or int.from_bytes(header[4:8], "little") == _UNCHECKED_HASH_PYC:
            foreign.append(rel)
    return foreign


def digest_files(root: Path, paths: list[str]) -> tuple[FileDigest, ...]:
    return tuple(FileDigest(path=p, sha256=sha256_file(root / p), size=(root / p).stat().st_size) for p in paths)


def verify_artifact(root: Path, manifest: Manifest) -> None:
    """Check that ``root`` holds exactly the files the manifest lists, byte for byte.

    Every problem is collected first and reported in one error.
    """
    problems = []
    if manifest.sealed_sha256 != manifest.content_digest():
        problems.append(f"{MANIFEST_FILE}: changed after it was sealed (its content no longer matches sealed_sha256)")
    expected = {d.path: d for d in manifest.files}
    regular, caches = _split(_all_files(root))
    present = set(regular)
    for path in sorted(present - set(expected)):
        problems.append(f"{path}: not listed in the manifest")
    for path in _foreign_bytecode(root, caches, set(expected)):
        problems.append(f"{path}: bytecode that does not belong to the listed sources")
    for path, digest in sorted(expected.items()):
        file = root / path
        if path not in present:
            problems.append(f"{path}: missing")
        elif file.stat().st_size != digest.size:
            problems.append(f"{path}: size {file.stat().st_size} != {digest.size}")
        elif sha256_file(file) != digest.sha256:
            problems.append(f"{path}: sha256 does not match")
    if problems:
        raise ArtifactIntegrityError(
            f"{root}: artifact does not match its manifest (tampered or incomplete copy); "
            "refusing to load it:\n  " + "\n  ".join(problems)
        )

"""File digests: the build side records them, the loader verifies them before it runs anything."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from .errors import ArtifactIntegrityError
from .files import special_kind
from .manifest import MANIFEST_FILE, FileDigest, Manifest

_CHUNK = 1 << 20
# An artifact's loader package, and each package in it, holds a regular, empty file named
# __pycache__ (listed in the manifest like every other file): Python can then neither write bytecode caches into the
# artifact nor read planted ones when the loader is imported (it falls back to the verified .py
# sources), so any other file there is refused as unlisted.
PYCACHE_PLACEHOLDER = "__pycache__"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_files(root: Path) -> list[str]:
    """Every regular file under ``root`` except the manifest, as sorted '/'-separated paths;
    a link or special file anywhere is refused."""
    return [p for p in _all_files(root) if p != MANIFEST_FILE]


def _all_files(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                kind = "a link" if stat.S_ISLNK(mode) else special_kind(mode)
                raise ArtifactIntegrityError(f"{root}: {rel!r} is {kind}; artifacts hold regular files only")
            if stat.S_ISREG(mode):
                found.append(rel)
    return sorted(found)


def _raise(error: OSError) -> None:
    raise ArtifactIntegrityError(f"cannot read {error.filename}: {error.strerror or error}")


def digest_files(root: Path, paths: list[str]) -> tuple[FileDigest, ...]:
    return tuple(FileDigest(path=p, sha256=sha256_file(root / p), size=(root / p).stat().st_size) for p in paths)


def verify_artifact(root: Path, manifest: Manifest) -> None:
    """Check that ``root`` holds exactly the files the manifest lists, byte for byte: nothing
    missing, changed or added (bytecode caches included).

    Every problem is collected first and reported in one error.
    """
    problems = []
    if manifest.sealed_sha256 != manifest.content_digest():
        problems.append(f"{MANIFEST_FILE}: changed after it was sealed (its content no longer matches sealed_sha256)")
    expected = {d.path: d for d in manifest.files}
    present = set(artifact_files(root))
    for path in sorted(present - set(expected)):
        problems.append(f"{path if path.isprintable() else repr(path)}: not listed in the manifest")
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

"""File digests: the build side records them, the loader verifies them before it runs anything."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import ArtifactIntegrityError
from .manifest import MANIFEST_FILE, FileDigest, Manifest

_CHUNK = 1 << 20
# Python writes bytecode next to the loader package when it is imported from the artifact.
_IGNORED_DIRS = frozenset({"__pycache__"})


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_files(root: Path) -> list[str]:
    """Every regular file under ``root`` except the manifest, as sorted '/'-separated paths."""
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if _IGNORED_DIRS.intersection(rel.parts):
            continue
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise ArtifactIntegrityError(f"{root}: {rel.as_posix()} is a link or special file; artifacts hold regular files only")
        if path.is_file() and rel.as_posix() != MANIFEST_FILE:
            found.append(rel.as_posix())
    return sorted(found)


def digest_files(root: Path, paths: list[str]) -> tuple[FileDigest, ...]:
    return tuple(FileDigest(path=p, sha256=sha256_file(root / p), size=(root / p).stat().st_size) for p in paths)


def verify_artifact(root: Path, manifest: Manifest) -> None:
    """Check that ``root`` holds exactly the files the manifest lists, byte for byte.

    Every problem is collected first and reported in one error.
    """
    problems = []
    expected = {d.path: d for d in manifest.files}
    present = set(artifact_files(root))
    for path in sorted(present - set(expected)):
        problems.append(f"{path}: not listed in the manifest")
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

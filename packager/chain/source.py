"""Where a chain comes from, and what is in it: a folder, or a model id already in the local
Hugging Face cache (never downloaded), scanned file by file before anything reads it.

Every entry must be a regular file with a UTF-8 name, or a link to one inside the boundary;
special files (a FIFO would block a reader forever), links to directories (their files would
escape the checks and the digests), link loops and links leaving the boundary are refused.
``SKIPPED_DIRS`` are neither checked nor hashed, so nothing may be loaded from them.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from packager.errors import MissingDependencyError, SourceError, UnsafeSourceError
from packager.runtime.enums import SourceKind
from packager.runtime.files import special_kind

# Version control, download caches and bytecode: never hashed, so nothing may load from them.
SKIPPED_DIRS = frozenset({".git", ".cache", "__pycache__"})
# What the saved-model format's files are named like: a directory of such a name is a broken folder.
_FILE_SUFFIXES = frozenset({".json", ".safetensors", ".bin", ".pt", ".txt", ".model", ".jinja", ".py"})
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class Source:
    """Where a chain comes from. ``boundary`` is the directory every file must resolve inside:
    the folder itself, or for a Hugging Face cache entry the repo's cache directory (its snapshot
    files are symlinks into ``blobs/``)."""

    kind: SourceKind
    location: str
    folder: Path
    boundary: Path
    revision: str | None = None


def resolve_source(source: str, *, revision: str | None = None) -> Source:
    """A local folder, or a model id already in the local Hugging Face cache (never downloaded)."""
    path = Path(source).expanduser()
    try:
        exists = path.exists()
        folder = path.resolve(strict=True) if exists else None
    except (OSError, RuntimeError, ValueError) as e:  # too long, a link loop, a NUL byte
        raise SourceError(f"{source[:200]!r}: not a usable path ({type(e).__name__}: {e})") from None
    if folder is not None:
        if not folder.is_dir():
            raise SourceError(f"{source} is a file; pass the folder that holds modules.json")
        return Source(kind=SourceKind.PATH, location=str(folder), folder=folder, boundary=folder)
    if not _REPO_ID.match(source):
        raise SourceError(f"{source}: no such folder")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise MissingDependencyError("resolving model ids needs huggingface_hub: pip install "
                                     "'chain-packager[build]'") from e
    try:
        snapshot = Path(snapshot_download(repo_id=source, revision=revision, local_files_only=True))
    except Exception as e:  # huggingface_hub raises several unrelated types for "not cached"
        raise SourceError(
            f"{source!r} is neither a folder nor a model id in the local Hugging Face cache "
            f"({os.environ.get('HF_HUB_CACHE') or os.environ.get('HF_HOME') or '~/.cache/huggingface'}). "
            f"Download it first (`hf download {source}`) or pass a local folder. ({type(e).__name__})"
        ) from None
    folder = snapshot.resolve()
    return Source(kind=SourceKind.HUB, location=source, folder=folder, boundary=folder.parent.parent,
                  revision=folder.name)


def scan_files(src: Source) -> list[str]:
    """Every file of the folder as '/'-separated paths, each checked: a regular file with a
    UTF-8 name, or a link to one inside the boundary. Special files (a FIFO would block a reader
    forever), links to directories (their files would escape the checks and the digests), link
    loops and links leaving the boundary are refused. ``SKIPPED_DIRS`` are neither checked nor
    hashed, so nothing may be loaded from them (``_module_dir``)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(src.folder, onerror=_unreadable):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = path.relative_to(src.folder).as_posix()
            _check_name(rel)
            if _checked_entry(src, path, rel):
                found.append(rel)
    return sorted(found)


def _checked_entry(src: Source, path: Path, rel: str) -> bool:
    """Whether ``path`` is a file to read and hash (False for a real directory); refuses anything
    else."""
    mode = os.lstat(path).st_mode
    if stat.S_ISDIR(mode):
        if path.suffix in _FILE_SUFFIXES:
            raise SourceError(f"{rel}: a directory where sentence-transformers and transformers expect a file")
        return False
    if stat.S_ISLNK(mode):
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError) as e:  # a loop (RuntimeError before Python 3.13), a dangling link
            raise SourceError(f"{rel}: a symbolic link that cannot be followed ({type(e).__name__}: {e})") from None
        if not target.is_relative_to(src.boundary):
            raise UnsafeSourceError(f"{path} links outside {src.boundary}; refusing to read it")
        mode = target.stat().st_mode
        if stat.S_ISDIR(mode):
            raise UnsafeSourceError(f"{rel}: a link to a directory; its files would not be checked or hashed. "
                                    "Copy the directory into the model folder instead")
    if not stat.S_ISREG(mode):
        raise UnsafeSourceError(f"{rel}: is {special_kind(mode)}; a saved model holds regular files only, and reading "
                                "this one could block or never end")
    return True


def _check_name(rel: str) -> None:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise SourceError(f"{rel.encode('utf-8', 'surrogateescape')!r}: a file name that is not UTF-8; the manifest "
                          "records every source file by name, in UTF-8. Rename it") from None


def _unreadable(error: OSError) -> None:
    raise SourceError(f"cannot read {error.filename}: {error.strerror or error}")

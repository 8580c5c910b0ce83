"""Reading files that may be hostile: regular files only, opened without blocking, size-limited.

Every file this project reads itself from a model folder, an artifact, a spec or a validation
set goes through ``read_regular``: a FIFO would block ``open()`` forever, a link to ``/dev/zero``
would grow memory until the process dies, and a directory or a link loop would raise an OSError
that is not ours. Opening with ``O_NONBLOCK`` returns at once for a FIFO, and ``fstat`` on the
opened descriptor (not on the name, which could change in between) decides.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import ArtifactIntegrityError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def special_kind(mode: int) -> str:
    """What a non-regular file is, in words ("a FIFO", "a directory"...)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_regular(path: str | Path, *, limit: int, error: type[Exception], follow_links: bool = True) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes; otherwise
    ``error`` with the reason. A missing file raises FileNotFoundError for the caller to word.
    With ``follow_links=False`` a symbolic link is refused rather than followed."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_links:  # O_NOFOLLOW met a link
            raise error(f"{path}: is a symbolic link, which is not followed here") from None
        raise error(f"{path}: cannot be opened ({_reason(e)})") from None  # a link loop, a name too long
    except ValueError as e:  # a NUL byte in the name
        raise error(f"{path!r}: cannot be opened ({e})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{path}: is {special_kind(mode)}, not a regular file")
        data = _read_all(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise error(f"{path}: larger than the {limit:,} bytes allowed for it")
    return data


def read_text(path: str | Path, *, limit: int, error: type[Exception], follow_links: bool = True) -> str:
    """``read_regular`` decoded as UTF-8; bytes that are not UTF-8 raise ``error``."""
    data = read_regular(path, limit=limit, error=error, follow_links=follow_links)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None


def read_json(path: str | Path, *, limit: int, error: type[Exception], follow_links: bool = True) -> Any:
    """``read_text`` parsed as JSON; text that is not JSON (or nested beyond Python's recursion
    limit, or holding an integer of more digits than Python converts) raises ``error``."""
    text = read_text(path, limit=limit, error=error, follow_links=follow_links)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise error(f"{path}: not valid JSON ({type(e).__name__}: {str(e)[:200]})") from None


def _read_all(fd: int, most: int) -> bytes:
    chunks, size = [], 0
    while size < most and (chunk := os.read(fd, min(1 << 20, most - size))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _reason(error: Exception) -> str:
    if isinstance(error, OSError) and error.errno is not None:
        return os.strerror(error.errno)
    return str(error)


def check_relative_path(path: str) -> None:
    """Refuse paths that could leave the artifact directory."""
    pure = PurePosixPath(path)
    if not path or "\\" in path or pure.is_absolute() or ".." in pure.parts or pure.parts[0] in ("", "."):
        raise ArtifactIntegrityError(f"manifest: path {path!r} must be relative, '/'-separated and stay inside the "
                                     "artifact")

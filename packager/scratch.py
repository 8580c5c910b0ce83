"""A build's scratch directories in the system's temporary folder, named
``packager-build-<pid>-<what>-<random>``: a build killed before it removes its own leaves them
behind (a large model's ONNX export is gigabytes), and the next build removes every one whose
process is gone."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "packager-build-"


def scratch_dir(what: str) -> tempfile.TemporaryDirectory:
    """A new scratch directory for ``what`` (removed with the returned object), after removing
    those that killed builds left."""
    remove_stale_scratch()
    return tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-{what}-")


def remove_stale_scratch() -> None:
    for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        if owner_gone(path.name, PREFIX):
            shutil.rmtree(path, ignore_errors=True)


def owner_gone(name: str, prefix: str) -> bool:
    """Whether ``name``, ``<prefix><pid>-...``, was made by a process that no longer exists."""
    pid = name[len(prefix):].partition("-")[0]
    return name.startswith(prefix) and pid.isdigit() and not alive(int(pid))


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (under any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return True

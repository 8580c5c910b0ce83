"""Named points where a test can kill the process, as a crash would, or hold it until other
processes got there too, to prove that an interrupted or concurrent build or registration
leaves nothing half-done behind.

    PACKAGER_FAILPOINTS=registry.uploaded packager register ...   # SIGKILL right after the upload
    PACKAGER_BARRIER=registry.uploaded:/tmp/meet:4 packager register ...   # wait for 4 processes there

Unset (always, outside such tests), a point costs two environment lookups. The points, in
the order a build reaches them: build.reference_loaded, build.exported (graphs written to the
staging directory), build.validated (parity gate run, manifest sealed), artifact.exchanged
(new artifact swapped in, previous one not yet removed), artifact.set_aside (only where no
atomic exchange exists: previous artifact renamed away, new one not yet in place; tests force
that path with PACKAGER_NO_EXCHANGE=1), build.published, registry.uploaded, registry.registered;
and registry.downloaded in `packager pull`.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ENV = "PACKAGER_FAILPOINTS"
BARRIER_ENV = "PACKAGER_BARRIER"


def failpoint(name: str) -> None:
    if name in os.environ.get(ENV, "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)
    point, _, rest = os.environ.get(BARRIER_ENV, "").partition(":")
    if point == name:
        folder, _, count = rest.rpartition(":")
        _meet(Path(folder), int(count))


def _meet(folder: Path, count: int, timeout: float = 120.0) -> None:
    """Wait until ``count`` processes (this one included) reached the point."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + timeout
    while len(list(folder.iterdir())) < count and time.monotonic() < deadline:
        time.sleep(0.05)

"""Named points where a test can kill the process, as a crash would, to prove that an
interrupted build or registration leaves nothing half-done behind.

    PACKAGER_FAILPOINTS=registry.uploaded packager register ...   # SIGKILL right after the upload

Unset (always, outside such tests), a failpoint costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "PACKAGER_FAILPOINTS"


def failpoint(name: str) -> None:
    if name in os.environ.get(ENV, "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)

"""Named points where a test can kill the process, as a crash would, to prove that an
interrupted build or registration leaves nothing half-done behind.

    PACKAGER_FAILPOINTS=registry.uploaded packager register ...   # SIGKILL right after the upload

Unset (always, outside such tests), a failpoint costs one environment lookup. The points, in
the order a build reaches them: build.reference_loaded, build.exported (graphs written to the
staging directory), build.validated (parity gate run, manifest sealed), artifact.exchanged
(new artifact swapped in, previous one not yet removed), artifact.set_aside (only where no
atomic exchange exists: previous artifact renamed away, new one not yet in place; tests force
that path with PACKAGER_NO_EXCHANGE=1), build.published, registry.uploaded, registry.registered.
"""

from __future__ import annotations

import os
import signal

ENV = "PACKAGER_FAILPOINTS"


def failpoint(name: str) -> None:
    if name in os.environ.get(ENV, "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)

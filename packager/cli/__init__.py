"""The ``packager`` command: parse (``parser``), call the library (``commands``), print
(``output``), and map errors to exit codes.

Exit codes come from the exception classes (see ``packager.errors``); 0 means every requested
step succeeded. Expected errors print one line of cause and what to do, never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys

from packager import progress
from packager.quiet import quiet_libraries

log = logging.getLogger("packager")


def main(argv: list[str] | None = None) -> int:
    from packager.cli.commands import write_failure
    from packager.cli.parser import parser

    args = parser().parse_args(argv)
    _configure_logging(args.verbose - args.quiet)
    # A build must never reach a model hub: sources are folders or already-cached model ids.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        if getattr(args, "spec", None) is not None:  # the spec's keys become the defaults flags override
            from packager.builder.packaging_toml import read_spec

            args = parser(read_spec(args.spec)).parse_args(argv)
        try:
            return int(args.run(args))
        finally:
            progress.stop()  # before the error line, so it prints below the bars
    except KeyboardInterrupt:
        print("packager: interrupted; nothing half-written was published", file=sys.stderr)
        return 130
    except Exception as e:
        # Our errors, and the same classes as defined by an artifact's own copy of the runtime
        # (its loader runs in the parity gate), carry their exit code; anything else is a bug.
        code = getattr(e, "exit_code", None)
        if not isinstance(code, int):
            raise
        print(f"packager: error: {e}", file=sys.stderr)
        write_failure(args, e, code)
        return code


def _configure_logging(verbosity: int) -> None:
    """Log lines on stderr (warnings and errors only with --quiet, debug with --verbose); on a
    terminal, progress bars with the log lines above them."""
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    progress.stop()
    handler: logging.Handler
    if verbosity >= 0 and sys.stderr.isatty():
        handler = progress.use_terminal(sys.stderr)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("packager: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    quiet_libraries(verbosity)

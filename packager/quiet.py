"""Keeping the libraries' own chatter off the user's terminal: their loggers, their progress bars
and what they print. One place for every library the build drives."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator

# The libraries whose loggers the command line turns down (up with -vv).
NOISY = ("transformers", "sentence_transformers", "mlflow", "alembic", "urllib3", "httpx", "torch", "onnxscript",
         "huggingface_hub", "filelock", "nncf")


@contextlib.contextmanager
def quiet(*loggers: str, output: bool = False) -> Iterator[io.StringIO]:
    """For the block: ``loggers`` ("" is the root logger) at errors only, warnings ignored, and
    with ``output`` what the libraries print captured (yielded, for an error message)."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as stack:
            warnings.simplefilter("ignore")
            if output:
                stack.enter_context(contextlib.redirect_stdout(sink))
                stack.enter_context(contextlib.redirect_stderr(sink))
            yield sink
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def quiet_libraries(verbosity: int) -> None:
    """Process-wide, for the command line: the libraries' loggers at errors (debug from -vv), and
    their progress bars and banners off (variables they read when imported)."""
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbosity > 1 else logging.ERROR)
    if verbosity > 1:
        return
    for variable, value in (("TRANSFORMERS_VERBOSITY", "error"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                            ("TQDM_DISABLE", "1"), ("MLFLOW_LOGGING_LEVEL", "WARNING"),
                            ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),
                            ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")):
        os.environ.setdefault(variable, value)
    if "transformers" in sys.modules:  # imported before (a test, a notebook): too late for the variables
        sys.modules["transformers"].utils.logging.disable_progress_bar()

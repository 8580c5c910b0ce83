"""Progress of the long steps (export, calibration, validation, upload): a rich progress bar per
step on a terminal, plain log lines everywhere else (CI logs, files, a library caller).

The command line calls ``use_terminal`` when stderr is a terminal and output is not ``--quiet``;
the steps themselves only call ``step``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

log = logging.getLogger("packager")
_bars: Any = None  # a started rich.progress.Progress while a terminal shows the bars


def use_terminal(stream: IO[str]) -> logging.Handler:
    """Show bars on ``stream`` from now on, until ``stop``; returns the log handler to use
    meanwhile, which prints above the bars instead of through them."""
    global _bars
    from rich.console import Console
    from rich.logging import RichHandler
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(file=stream)
    _bars = Progress(SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description}"), BarColumn(),
                     MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    _bars.start()
    return RichHandler(console=console, show_time=False, show_path=False, markup=False)


def stop() -> None:
    global _bars
    if _bars is not None:
        _bars.stop()
        _bars = None


@contextmanager
def step(description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """A long step; yields ``advance(n=1)`` for steps of ``total`` parts. On a terminal, a bar
    (a spinner without ``total``) that ends ticked or marked failed; elsewhere one line when
    it starts and one when it ends, with its time."""
    started = time.perf_counter()
    if _bars is None:
        log.info("%s ...", description)
        done = 0

        def advance(n: int = 1) -> None:
            nonlocal done
            done += n
            log.debug("%s: %d/%s", description, done, total or "?")

        yield advance
        log.info("%s: done in %.1f s", description, time.perf_counter() - started)
        return
    bars = _bars
    task = bars.add_task(description, total=total)
    def advance_bar(n: int = 1) -> None:
        bars.advance(task, n)

    try:
        yield advance_bar
    except BaseException:
        bars.update(task, description=f"{description} [red]failed", total=total or 1)
        bars.stop_task(task)
        raise
    bars.update(task, total=total or 1, completed=total or 1)
    bars.stop_task(task)

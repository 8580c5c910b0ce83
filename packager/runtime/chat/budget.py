"""What one render of a chat template may spend, and how values are measured against it.

A render's ``Budget`` (iterations, a deadline of the rendering thread's CPU time with a
wall-clock ceiling, and a size cap) is set by ``bounded`` and read by every step through
``budget``; ``deep_size`` is how values are measured against the cap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from .bounds import BASE_CHARS, ITERATIONS, SECONDS, WALL_FACTOR
from .errors import BoundExceededError, TemplateRefusedError


@dataclass
class Budget:
    deadline: float  # of the rendering thread's CPU time (``_clock``)
    iterations: int
    chars: int  # the most any one value may hold (see deep_size), and all output together
    wall_deadline: float = math.inf  # of time.monotonic(): WALL_FACTOR times the CPU deadline

    @classmethod
    def for_input(cls, chars: int) -> Budget:
        seconds = SECONDS + chars / 1e6
        return cls(deadline=_clock() + seconds, iterations=ITERATIONS + 4 * chars, chars=BASE_CHARS + 4 * chars,
                   wall_deadline=time.monotonic() + WALL_FACTOR * seconds)

    def tick(self, iterations: int = 1) -> None:
        self.iterations -= iterations
        if self.iterations < 0:
            raise BoundExceededError("the chat template iterated more than its budget allows in one render")
        if _clock() > self.deadline:
            raise BoundExceededError("the chat template took too long to render one input")
        if time.monotonic() > self.wall_deadline:  # a starved render still frees its worker
            raise BoundExceededError("the chat template's render was held up past its wall-clock ceiling")

    def size(self, size: int, what: str) -> None:
        if size > self.chars:
            raise BoundExceededError(f"the chat template made a {what} of more than {self.chars} characters")


def _clock() -> float:
    """The rendering thread's CPU time. A template can only spend time by computing (it cannot
    sleep or wait), so this bounds what it does; wall-clock time would also count the seconds a
    busy machine, another thread holding the GIL, or a stopped process took from it, and refuse
    the same input in one run and render it in the next."""
    return time.thread_time()


_BUDGET: ContextVar[Budget] = ContextVar("chat_template_budget")


def budget() -> Budget:
    try:
        return _BUDGET.get()
    except LookupError:  # only a render sets it; the compiled template never runs without one
        raise TemplateRefusedError("the chat template ran outside a bounded render") from None


@contextmanager
def bounded(limits: Budget) -> Iterator[Budget]:
    token = _BUDGET.set(limits)
    try:
        yield limits
    finally:
        _BUDGET.reset(token)


def deep_size(value: object, limit: int) -> int:
    """Characters of strings and one per item or number, through containers and namespaces;
    stops counting past ``limit``."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        total += 1
        if isinstance(item, (str, bytes)):
            total += len(item)
        elif isinstance(item, int):
            total += item.bit_length() // 3
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, range):
            total += len(item)
        elif type(item).__name__ == "Namespace":
            stack.extend(object.__getattribute__(item, "_Namespace__attrs").values())
    return total

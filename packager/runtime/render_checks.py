"""What one render of a chat template may spend, and the checks made before each step runs.

A render's ``Budget`` (iterations, a deadline of the rendering thread's CPU time with a
wall-clock ceiling, and a size cap) is set by ``bounded`` and read by every step through
``budget``; ``deep_size`` is how values are measured against the cap. The checks here run
before an operator or ``~`` makes its value (``check_binop``, ``bounded_concat``), and
``printable`` refuses to turn into text a value whose text differs from the reference's. The
errors say why a render stopped: the template's own failure, a bound, or any other refusal.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

from .errors import InvalidInputError

_PACKAGE = __name__.rpartition(".")[0] + "."  # this package's modules, as the runtime or an artifact's loader

ITERATIONS = 100_000  # plus four per character of the conversation
SECONDS = 2.0  # plus a second per million characters, of the rendering thread's CPU time (see _clock)
WALL_FACTOR = 5  # a render's wall-clock ceiling, in CPU deadlines: only a starved or stopped render gets there
BASE_CHARS = 1 << 20  # plus four per character
INT_BITS = 4096  # integers a template makes; no chat template needs more
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?([#0\- +]*)(\*|\d*)(?:\.(\*|\d*))?")


class TemplateRefused(InvalidInputError):
    """The chat template failed or exceeded its bounds on this input."""


class TemplateFailed(TemplateRefused):
    """The template itself failed on this input (its ``raise_exception``, an undefined operation,
    the sandbox's SecurityError), as it does in the reference; anything else this module raises
    is its own refusal, where transformers would have rendered."""


class BoundExceeded(TemplateRefused):
    """A render stopped by the sandbox's bounds (time, iterations, sizes, recursion, memory), not
    by the template: transformers would have rendered it, so nothing may stand in for its result,
    and the deadline depends on how busy the machine is, so a refusal may not be remembered."""


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
            raise BoundExceeded("the chat template iterated more than its budget allows in one render")
        if _clock() > self.deadline:
            raise BoundExceeded("the chat template took too long to render one input")
        if time.monotonic() > self.wall_deadline:  # a starved render still frees its worker
            raise BoundExceeded("the chat template's render was held up past its wall-clock ceiling")

    def size(self, size: int, what: str) -> None:
        if size > self.chars:
            raise BoundExceeded(f"the chat template made a {what} of more than {self.chars} characters")


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
        raise TemplateRefused("the chat template ran outside a bounded render") from None


@contextmanager
def bounded(limits: Budget) -> Iterator[Budget]:
    token = _BUDGET.set(limits)
    try:
        yield limits
    finally:
        _BUDGET.reset(token)


def deep_size(value: Any, limit: int) -> int:
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


_VIEWS: tuple[type, ...] = (type({}.keys()), type({}.values()), type({}.items()))
_PRINTABLE_JINJA2 = frozenset({"Undefined", "LoopContext", "Macro", "Namespace"})  # reprs without addresses


def printable(value: Any) -> Any:
    """``value``, if its text (``str``, or ``repr`` through containers) is what transformers'
    render makes of it: plain data, and jinja2's own undefined, loop, macro and namespace. Anything
    else (a global, a function or method, a generator, a cycler) prints its class or its address,
    which differ between the two renders: refused. Also the environment's ``finalize``."""
    limit = budget().chars
    stack, namespaces = [value], set()
    while stack:
        limit -= 1
        if limit < 0:
            raise TemplateRefused("the chat template printed a value too large to check")
        item = stack.pop()
        if isinstance(item, (str, int, float, range)) or item is None:
            continue
        if isinstance(item, (list, tuple, *_VIEWS)):
            stack.extend(cast(Iterable, item))
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif type(item).__name__ in _PRINTABLE_JINJA2 and type(item).__module__.startswith(("jinja2.", _PACKAGE)):
            if type(item).__name__ == "Namespace":
                if id(item) in namespaces:  # it may hold itself; transformers' repr would not end
                    raise TemplateRefused("the chat template printed a namespace that holds itself")
                namespaces.add(id(item))
                stack.extend(object.__getattribute__(item, "_Namespace__attrs").values())
        else:
            raise TemplateRefused(f"the chat template turned a {type(item).__name__} into text; its text differs "
                                  "from what transformers renders, so it is refused")
    return value


def bounded_concat(*values: Any) -> str:
    limits = budget()
    limits.tick(0)
    limits.size(sum(deep_size(v, limits.chars) for v in values), "string")
    for value in values:
        printable(value)
    return "".join(v if isinstance(v, str) else str(v) for v in values)


def check_binop(limits: Budget, operator: str, left: Any, right: Any) -> None:
    sized = (str, list, tuple)
    if operator == "*":
        for value, count in ((left, right), (right, left)):
            if isinstance(value, sized) and isinstance(count, int):
                unit = len(value) if isinstance(value, str) else deep_size(value, limits.chars)
                limits.size(unit * max(count, 0), "repeated value")
        if isinstance(left, int) and isinstance(right, int):
            check_bits(left.bit_length() + right.bit_length())
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
        check_bits(left.bit_length() * right)
    elif operator == "+" and isinstance(left, sized) and isinstance(right, sized):
        limits.size(deep_size(left, limits.chars) + deep_size(right, limits.chars), "concatenation")
    elif operator == "%" and isinstance(left, str):
        arguments = list(right.values()) if isinstance(right, dict) else \
            list(right) if isinstance(right, tuple) else [right]
        limits.size(formatted_size(limits, left, arguments), "formatted string")


def check_bits(bits: int) -> None:
    if bits > INT_BITS:
        raise BoundExceeded(f"the chat template made an integer of more than {INT_BITS} bits")


def formatted_size(limits: Budget, text: str, arguments: list) -> int:
    """The most a %-format can make: its text, its field widths and precisions, and the largest
    argument once per field (a mapping's value can fill many). A ``*`` width is refused."""
    fields = _PERCENT_SPEC.findall(text)
    widths = 0
    for _, width, precision in fields:
        if "*" in (width, precision):
            raise TemplateRefused("the chat template used a '*' field width")
        widths += sum(int(d[:10]) for d in (width, precision) if d)
    largest = max((deep_size(a, limits.chars) for a in arguments), default=0)
    return len(text) + widths + len(fields) * largest

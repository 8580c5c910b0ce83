"""The checks made before each step of a render runs.

``check_binop`` and ``bounded_concat`` size what an operator or ``~`` would make before it is
made (``formatted_size`` for a %-format, ``check_bits`` for integers), and ``printable`` refuses
to turn into text a value whose text differs from the reference's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, cast

from .bounds import INT_BITS
from .budget import Budget, budget, deep_size
from .errors import BoundExceededError, TemplateRefusedError

_PACKAGE = __name__.rpartition(".")[0] + "."  # this package's modules, as the runtime or an artifact's loader
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?([#0\- +]*)(\*|\d*)(?:\.(\*|\d*))?")
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
            raise TemplateRefusedError("the chat template printed a value too large to check")
        item = stack.pop()
        if isinstance(item, (str, int, float, range)) or item is None:
            continue
        if isinstance(item, (list, tuple, *_VIEWS)):
            stack.extend(cast(Iterable[Any], item))
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif type(item).__name__ in _PRINTABLE_JINJA2 and type(item).__module__.startswith(("jinja2.", _PACKAGE)):
            if type(item).__name__ == "Namespace":
                if id(item) in namespaces:  # it may hold itself; transformers' repr would not end
                    raise TemplateRefusedError("the chat template printed a namespace that holds itself")
                namespaces.add(id(item))
                stack.extend(object.__getattribute__(item, "_Namespace__attrs").values())
        else:
            raise TemplateRefusedError(f"the chat template turned a {type(item).__name__} into text; its text differs "
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
        raise BoundExceededError(f"the chat template made an integer of more than {INT_BITS} bits")


def formatted_size(limits: Budget, text: str, arguments: list[Any]) -> int:
    """The most a %-format can make: its text, its field widths and precisions, and the largest
    argument once per field (a mapping's value can fill many). A ``*`` width is refused."""
    fields = _PERCENT_SPEC.findall(text)
    widths = 0
    for _, width, precision in fields:
        if "*" in (width, precision):
            raise TemplateRefusedError("the chat template used a '*' field width")
        widths += sum(int(d[:10]) for d in (width, precision) if d)
    largest = max((deep_size(a, limits.chars) for a in arguments), default=0)
    return len(text) + widths + len(fields) * largest

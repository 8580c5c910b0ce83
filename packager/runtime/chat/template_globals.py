"""transformers' globals for chat templates, bounded: ``range`` within the budget, ``dict``
with no class to walk from, ``namespace`` without private names, ``raise_exception`` as the
template's own failure, ``strftime_now``, and ``lipsum`` refused (its text is random)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import jinja2

from .bounds import MAX_RANGE
from .budget import budget
from .errors import BoundExceededError, TemplateFailedError, TemplateRefusedError


def bounded_range(*args: int) -> range:
    values = range(*args)
    if len(values) > MAX_RANGE:  # transformers' range (jinja2's sandbox) fails on it
        raise TemplateRefusedError(f"the chat template asked for a range of {len(values)} items; at most {MAX_RANGE}")
    if len(values) > budget().iterations:
        raise BoundExceededError(f"the chat template asked for a range of {len(values)} items, more than its budget")
    return values


def lipsum(*args: Any, **kwargs: Any) -> None:
    raise TemplateRefusedError("the chat template called lipsum, whose text is random: no render can match the "
                               "reference's")


def raise_exception(message: str) -> None:
    raise TemplateFailedError(f"the chat template refused this input: {str(message)[:300]}")


def strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class TemplateDict:
    """``dict(...)`` for templates, as transformers gives it: a new dict, no class to walk from."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


class Namespace(jinja2.utils.Namespace):
    """jinja2's namespace, refusing underscore-prefixed names (no way into CPython internals)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # jinja2's own signature trick: self is args[0]
        self, rest = args[0], args[1:]
        attributes = dict(*rest, **kwargs)
        for name in attributes:
            Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attributes)

    def __setitem__(self, name: str, value: Any) -> None:
        Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a namespace attribute may not start with '_': {name!r}")

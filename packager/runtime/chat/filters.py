"""jinja2's filters and the Python methods a chat template may call, each bounded before it runs.

``bounded_filter`` wraps every filter: its arguments within the size cap, what it can make sized
before it runs (``join``, ``replace``, ``format``, ``indent``, ``wordwrap``...), arguments that
would print unlike the reference's refused, and the inputs on which its time would grow faster
than their size refused (urlize's long words, wordwrap's and pprint's large inputs...).
``check_call`` does the same for method calls (``replace``, ``strip``, ``join``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from .bounds import (
    PPRINT_NESTING,
    ROUND_DIGITS,
    SLOW_FILTER_CHARS,
    STRIP_CHARS,
    URLIZE_PIECE,
    URLIZE_WORD,
    WRAP_RUN,
)
from .budget import Budget, budget, deep_size
from .checks import formatted_size, printable
from .errors import TemplateRefusedError

_NON_SPACE = re.compile(r"\S+")
_WORD_START = re.compile(r"(?<=\s)(?=\S)")


def _bounded_items(limits: Budget, items: Iterator[Any]) -> Iterator[Any]:
    """``items`` one by one, each counted and sized, still an iterator as transformers' filter
    would get it (its length, its JSON and its text are errors or refusals in both)."""
    size = 0
    for item in items:
        limits.tick()
        size += deep_size(item, limits.chars)
        limits.size(size, "sequence")
        yield item


def check_arguments(limits: Budget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Arguments within the size cap, together, and integers (widths, counts) too."""
    values = (*args, *kwargs.values())
    limits.size(sum(deep_size(v, limits.chars) for v in values), "set of arguments")
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > limits.chars:
            limits.size(abs(value), "width or count")


def check_call(limits: Budget, function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    check_arguments(limits, args, kwargs)
    owner, name = getattr(function, "__self__", None), getattr(function, "__name__", "")
    if isinstance(owner, str) and name == "replace":
        _check_replace(limits, owner, *args[:2])
    elif isinstance(owner, str) and name in ("strip", "lstrip", "rstrip"):
        _check_strip_chars(args[0] if args else None)
    elif isinstance(owner, str) and name == "join" and args:
        _check_join(limits, args[0], owner)


def _check_replace(limits: Budget, text: Any, old: Any = "", new: Any = "", *_: Any, **__: Any) -> None:
    if not all(isinstance(v, str) for v in (text, old, new)):
        raise TemplateRefusedError("the chat template's replace takes strings only")
    count = text.count(old) if old else len(text) + 1
    limits.size(len(text) + count * len(new), "replaced string")


def _check_strip_chars(chars: Any) -> None:
    """Stripping tests each character against every one of ``chars``: time grows with both."""
    if isinstance(chars, str) and len(chars) > STRIP_CHARS:
        raise TemplateRefusedError(f"the chat template strips a set of {len(chars)} characters; at most "
                                   f"{STRIP_CHARS} are allowed")


def _check_words(text: Any, longest: int, what: str) -> None:
    """Refuse a text with a run of more than ``longest`` non-space or space characters, on which
    ``what`` takes time that grows with the run's square."""
    if not isinstance(text, str):
        return
    run = max(max(map(len, text.split()), default=0), max(map(len, _NON_SPACE.split(text))))
    if run > longest:
        raise TemplateRefusedError(f"the chat template's {what} met a word or space of {run} characters; it is bounded "
                                   f"to {longest}, as its time grows with their square")


def _check_slow_filter_input(value: Any, what: str) -> None:
    size = deep_size(value, SLOW_FILTER_CHARS + 1)
    if size > SLOW_FILTER_CHARS:
        raise TemplateRefusedError(f"the chat template's {what} was given {size} characters or more; it takes at "
                                   f"most {SLOW_FILTER_CHARS}, as it costs more time a character than a render's "
                                   "deadline allows")


def _check_join(limits: Budget, items: Any, separator: Any) -> None:
    if not isinstance(separator, str):
        raise TemplateRefusedError("the chat template's join takes a string separator")
    if isinstance(items, (list, tuple, dict, str, range)):
        limits.size(deep_size(items, limits.chars) + len(items) * len(separator), "joined string")


def _filter_checks(limits: Budget, name: str, values: list[Any], kwargs: dict[str, Any]) -> None:
    """What each filter that can outgrow its inputs may make (``values``: the filter's positional
    arguments after any context, the filtered value first)."""
    value, rest = (values[0] if values else None), values[1:]
    if name == "join":
        _check_join(limits, value, rest[0] if rest else kwargs.get("d", ""))
    elif name == "replace":
        _check_replace(limits, value, *rest[:2], **{k: v for k, v in kwargs.items() if k in ("old", "new")})
    elif name == "format" and isinstance(value, str):
        limits.size(formatted_size(limits, value, [*rest, *kwargs.values()]), "formatted string")
    elif name == "indent" and isinstance(value, str):
        width = rest[0] if rest else kwargs.get("width", 4)
        unit = len(width) if isinstance(width, str) else int(width)
        limits.size(len(value) + (value.count("\n") + 1) * unit, "indented string")
    elif name == "wordwrap" and isinstance(value, str):
        width = rest[0] if rest else kwargs.get("width", 79)
        wrap = kwargs.get("wrapstring") or (rest[2] if len(rest) > 2 else None) or "\n"
        limits.size(len(value) + (len(value) // max(int(width), 1) + 1) * len(str(wrap)), "wrapped string")
    elif name == "tojson":
        indent = kwargs.get("indent", rest[1] if len(rest) > 1 else None)
        separators = kwargs.get("separators", rest[2] if len(rest) > 2 else None)
        if (isinstance(indent, int) and indent > 16) or (isinstance(indent, str) and len(indent) > 16) or \
                (separators is not None and deep_size(separators, 64) > 16):
            raise TemplateRefusedError("the chat template's tojson indent or separators are beyond what JSON needs")
    elif name == "sum" and not isinstance(kwargs.get("start", rest[1] if len(rest) > 1 else 0), (int, float)):
        raise TemplateRefusedError("the chat template's sum adds numbers only")


# Filters that never turn their arguments into text; every other one gets printable arguments.
_OPAQUE_FILTERS = frozenset({"abs", "attr", "batch", "count", "d", "default", "dictsort", "first", "float", "groupby",
                             "int", "items", "last", "length", "list", "map", "max", "min", "reject", "rejectattr",
                             "reverse", "round", "select", "selectattr", "slice", "sort", "sum", "tojson", "unique"})


def _as_the_reference(name: str, values: list[Any], kwargs: dict[str, Any]) -> None:
    """Refuses a filter call whose result could differ from transformers': ``random``, and
    text made of a value that does not print the same (see ``printable``)."""
    if name == "random":
        raise TemplateRefusedError("the chat template used the random filter: no render can match the reference's")
    if name in _OPAQUE_FILTERS:
        return
    for value in (*values, *kwargs.values()):
        printable(value)


def _filter_time_checks(name: str, values: list[Any], kwargs: dict[str, Any]) -> None:
    """The inputs on which a filter's time would grow faster than their size, refused."""
    value, rest = (values[0] if values else None), values[1:]
    if name == "urlize":
        _check_words(str(value), URLIZE_WORD, "urlize")
    elif name == "wordwrap":
        _check_words(value, WRAP_RUN, "wordwrap")
        _check_slow_filter_input(value, "wordwrap")
    elif name == "trim":
        _check_strip_chars(rest[0] if rest else kwargs.get("chars"))
    elif name == "pprint":
        if _nesting(value, PPRINT_NESTING) > PPRINT_NESTING:
            raise TemplateRefusedError(f"the chat template pretty-prints a value nested more than {PPRINT_NESTING} "
                                       "deep; pprint's time grows with the size times the depth")
        _check_slow_filter_input(value, "pprint")
    elif name == "round":
        precision = rest[0] if rest else kwargs.get("precision", 0)
        if isinstance(precision, int) and abs(precision) > ROUND_DIGITS:
            raise TemplateRefusedError(f"the chat template rounds to {precision} digits; at most {ROUND_DIGITS} are "
                                       "allowed")


def bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def bounded(*args: Any, **kwargs: Any) -> Any:
        limits = budget()
        limits.tick(0)
        at = 1 if getattr(function, "jinja_pass_arg", None) else 0
        if len(args) > at and isinstance(args[at], Iterator) and type(args[at]).__name__ != "LoopContext":
            # made item by item, each sized (map, select...); a loop stays a loop (loop | attr('index'));
            # join makes a string of them either way, so it gets a list, sized with its separators
            items = _bounded_items(limits, args[at])
            args = (*args[:at], list(items) if name == "join" else items, *args[at + 1 :])
        check_arguments(limits, args, kwargs)
        values = list(args[at:])
        _as_the_reference(name, values, kwargs)
        _filter_checks(limits, name, values, kwargs)
        _filter_time_checks(name, values, kwargs)
        result = function(*args, **kwargs)
        limits.size(deep_size(result, limits.chars), "filter result")
        return result

    if hasattr(function, "jinja_pass_arg"):  # jinja2 passes the context/environment to marked filters
        bounded.jinja_pass_arg = function.jinja_pass_arg  # type: ignore[attr-defined]
    return bounded


def _nesting(value: Any, limit: int) -> int:
    """How deep containers nest in ``value``, counted up to ``limit + 1``."""
    deepest, stack = 0, [(value, 0)]
    while stack and deepest <= limit:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in (*item.keys(), *item.values()))
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def piecewise_urlize(urlize: Callable[..., Any]) -> Callable[..., Any]:
    """jinja2's urlize, run on pieces of about URLIZE_PIECE characters cut where a word starts,
    with the deadline checked between them. urlize treats every word and every run of spaces on
    its own, so the pieces' results joined are its result on the whole text."""
    def pieces(eval_ctx: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        if type(value) is not str or len(value) <= URLIZE_PIECE:
            return urlize(eval_ctx, value, *args, **kwargs)
        limits, parts, start = budget(), [], 0
        while start < len(value):
            cut = _WORD_START.search(value, start + URLIZE_PIECE)
            end = cut.start() if cut else len(value)
            parts.append(urlize(eval_ctx, value[start:end], *args, **kwargs))
            limits.tick(0)
            start = end
        return parts[0].__class__("").join(parts)

    pieces.jinja_pass_arg = urlize.jinja_pass_arg  # type: ignore[attr-defined]
    return pieces


def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    """transformers' tojson: plain JSON, not HTML-escaped as jinja2's own filter writes it."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

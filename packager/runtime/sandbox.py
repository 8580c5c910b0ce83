"""A sandboxed, bounded Jinja environment for chat templates, which are data from model folders.

The engine is the one transformers renders chat templates with: jinja2's immutable sandbox, with
transformers' options, filters and globals. On top of it, every render has a budget
(``Budget``), and the template is held to three rules:

1. *No Python objects beyond the variables.* Attributes are an allow-list per type (a few
   methods of str, dict, list and tuple; the public attributes of jinja2's loop, namespace,
   cycler and joiner); ``namespace`` refuses private names; the helpers this module compiles into
   the template cannot be named by it.
   *Never a render that differs from transformers'*: what transformers' sandbox hides is hidden
   the same way here (the same undefined), and what it shows but the allow-list does not
   (``str.format``, ``encode``, ``translate``, ``int.real``...) is refused when the template
   reads it, not read as undefined, so a template cannot branch on the difference
   (``'x'.encode is defined``). Likewise a value whose text would differ (a global, a function,
   a generator: their reprs name other classes or addresses) is refused where it would be
   printed or turned into a string, and what is random (``lipsum``, ``random``) is refused.
   ``tests/runtime/test_template_differential.py`` renders real and hostile templates both ways.
2. *Every value stays within a size cap* (``Budget.chars``: 1 MiB plus four times the rendered
   conversation's characters, counting a container's items and its strings' characters, see
   ``deep_size``), checked *before* anything that could outgrow its inputs runs: arithmetic
   (repetition, ``+``, ``~``, ``%`` and its field widths, integer powers and products, which are
   also held to INT_BITS), literals, filters and method calls, each with what its result can grow
   to (``join``, ``indent``, ``wordwrap``, ``tojson``, ``replace``, ``format``...). So no single
   step allocates or compares more than a few times the cap.
3. *Time and iterations are counted*: loop iterations and ``range`` against a budget that grows
   with the input, and a deadline checked at every loop iteration, call, filter and operator.

``include``, ``extends``, ``import`` and recursive loops are refused when the template is compiled.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from .errors import ArtifactIntegrityError, InvalidInputError, MissingDependencyError

MAX_RANGE = 100_000  # jinja2.sandbox.MAX_RANGE: the reference's range refuses more
JINJA2_MINIMUM = (3, 1, 6)  # transformers' own minimum: older sandboxes have known escapes
ITERATIONS = 100_000  # plus four per character of the conversation
SECONDS = 2.0  # plus a second per million characters, of the rendering thread's CPU time (see _clock)
WALL_FACTOR = 5  # a render's wall-clock ceiling, in CPU deadlines: only a starved or stopped render gets there
BASE_CHARS = 1 << 20  # plus four per character
INT_BITS = 4096  # integers a template makes; no chat template needs more
SOURCE_CHARS = 1 << 20  # a template's source; real ones are a few kB
_HELPERS = ("_bounded_iter", "_bounded_concat", "_bounded_value")
STRIP_CHARS = 64  # the characters strip, lstrip, rstrip and trim may strip: each is tested against all
URLIZE_WORD = 64  # the longest word urlize takes: its time grows with each word's square
URLIZE_PIECE = 1 << 14  # urlize runs on pieces of this many characters, the deadline checked between them
WRAP_RUN = 1000  # the longest word or space wordwrap takes: textwrap slices it anew for every line it fills
PPRINT_NESTING = 16  # pprint formats every level's contents again for the level above
# wordwrap and pprint cost several microseconds a character, more than the deadline's one a
# character allows for an input: each takes at most this much, so one call ends within the deadline
SLOW_FILTER_CHARS = 1 << 16
ROUND_DIGITS = 1000  # round's precision: an integer's rounding makes 10 ** precision
_NON_SPACE = re.compile(r"\S+")
_WORD_START = re.compile(r"(?<=\s)(?=\S)")
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?([#0\- +]*)(\*|\d*)(?:\.(\*|\d*))?")
# What a template may call or read on Python values; what transformers' sandbox also hides is
# undefined to it, the rest is refused (see BoundedEnvironment.is_safe_attribute).
_ALLOWED = {
    str: frozenset({"strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith", "lower",
                    "upper", "title", "capitalize", "casefold", "swapcase", "count", "find", "rfind", "index",
                    "rindex", "isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper", "istitle",
                    "isnumeric", "isdecimal", "replace", "join", "removeprefix", "removesuffix", "partition",
                    "rpartition"}),
    dict: frozenset({"get", "items", "keys", "values"}),
    list: frozenset({"count", "index"}),
    tuple: frozenset({"count", "index"}),
}


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


def compile_template(source: str, where: str) -> Any:
    """The bounded template, or ArtifactIntegrityError naming what cannot be bounded."""
    try:
        import jinja2
        from jinja2 import nodes
    except ImportError as e:
        raise MissingDependencyError("this artifact renders a chat template and needs jinja2: pip install "
                                     "'jinja2>=3.1.6'") from e
    version = tuple(int(p) for p in re.findall(r"\d+", jinja2.__version__)[:3])
    if version < JINJA2_MINIMUM:
        raise MissingDependencyError(f"chat templates need jinja2>=3.1.6 (older sandboxes have known escapes); "
                                     f"found {jinja2.__version__}: pip install -U 'jinja2>=3.1.6'")
    from .folding import check_constants, check_nesting

    environment = _environment(jinja2, nodes)
    try:
        if len(source) > SOURCE_CHARS:
            raise TemplateRefused(f"{len(source)} characters, more than the {SOURCE_CHARS} a chat template may have")
        check_nesting(environment, source)  # before the recursive parser
        tree = environment.parse(source)
        _refuse_unbounded(tree, nodes)
        check_constants(environment, tree, nodes, chars=len(source))  # what jinja2 computes when it compiles
        _bound(tree, nodes)
        tree.set_environment(environment)
        return environment.from_string(tree)
    except jinja2.TemplateSyntaxError as e:
        raise ArtifactIntegrityError(f"{where}: not a Jinja template ({e.message}, line {e.lineno})") from None
    except (ArtifactIntegrityError, TemplateRefused) as e:
        raise ArtifactIntegrityError(f"{where}: {e}") from None
    except (RecursionError, SyntaxError, MemoryError, ValueError) as e:  # nesting beyond what Python compiles
        raise ArtifactIntegrityError(f"{where}: cannot be compiled ({type(e).__name__}: {str(e)[:200]})") from None


def _environment(jinja2: Any, nodes: Any) -> Any:
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """``{% generation %}...{% endgeneration %}`` as transformers parses it: a call block whose
        body is rendered as its caller (so its scoping is transformers'; transformers only uses
        the block to mark assistant tokens)."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_generation"), [], [], body).set_lineno(lineno)

        @jinja2.pass_eval_context
        def _generation(self, context: Any, caller: Any) -> str:
            return caller()

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
        concat = staticmethod(_bounded_join)  # joins captured output: block sets, macros, filter blocks

        def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
            """Hidden as transformers' sandbox hides it (the same undefined), or exposed, or refused:
            never undefined here where transformers' template would read it."""
            if not super().is_safe_attribute(obj, attr, value):
                return False
            if _exposed(obj, attr):
                return True
            raise TemplateRefused(f"the chat template reads {attr!r} of a {type(obj).__name__} value, which the "
                                  "runtime does not expose (transformers does, so rendering on would differ); "
                                  "rewrite the template without it")

        def wrap_str_format(self, value: Any) -> None:  # str.format is not among str's allowed methods
            return None

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            limits = budget()
            limits.tick(0)
            _check_call(limits, __obj, args, kwargs)
            result = super().call(__context, __obj, *args, **kwargs)
            limits.size(deep_size(result, limits.chars), "call result")
            return result

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            limits = budget()
            limits.tick(0)
            _check_binop(limits, operator, left, right)
            if operator == "%" and isinstance(left, str):
                _printable(right)
            return super().call_binop(context, operator, left, right)

    environment = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, finalize=_printable,
                                     extensions=[Generation, "jinja2.ext.loopcontrols"])
    filters = {**environment.filters, "tojson": _tojson, "urlize": _piecewise_urlize(environment.filters["urlize"])}
    environment.filters = {name: _bounded_filter(name, f) for name, f in filters.items()}
    environment.globals = {"range": _range, "dict": _Dict(), "namespace": _namespace(jinja2),
                           "raise_exception": _raise_exception, "strftime_now": _strftime_now,
                           "cycler": environment.globals["cycler"], "joiner": environment.globals["joiner"],
                           "lipsum": _lipsum, "_bounded_iter": _bounded_iter,
                           "_bounded_concat": _bounded_concat, "_bounded_value": _bounded_value}
    environment.tests = {**environment.tests, "lower": _printing_test(environment.tests["lower"]),
                         "upper": _printing_test(environment.tests["upper"])}
    return environment


def _exposed(obj: Any, attr: str) -> bool:
    """Whether the allow-list lets a template read ``attr`` of ``obj``."""
    allowed = next((names for kind, names in _ALLOWED.items() if isinstance(obj, kind)), None)
    if allowed is not None:
        return attr in allowed
    return type(obj).__module__.startswith("jinja2.") or type(obj).__name__ == "Namespace" or isinstance(obj, _Dict)


_VIEWS: tuple[type, ...] = (type({}.keys()), type({}.values()), type({}.items()))
_PRINTABLE_JINJA2 = frozenset({"Undefined", "LoopContext", "Macro", "Namespace"})  # reprs without addresses


def _printable(value: Any) -> Any:
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
        elif type(item).__name__ in _PRINTABLE_JINJA2 and type(item).__module__.startswith(("jinja2.", __name__)):
            if type(item).__name__ == "Namespace":
                if id(item) in namespaces:  # it may hold itself; transformers' repr would not end
                    raise TemplateRefused("the chat template printed a namespace that holds itself")
                namespaces.add(id(item))
                stack.extend(object.__getattribute__(item, "_Namespace__attrs").values())
        else:
            raise TemplateRefused(f"the chat template turned a {type(item).__name__} into text; its text differs "
                                  "from what transformers renders, so it is refused")
    return value


def _printing_test(test: Any) -> Callable:
    """jinja2's ``lower`` and ``upper`` tests read ``str(value)``: only for printable values."""
    def checked(value: Any) -> bool:
        return bool(test(_printable(value)))

    return checked


def _refuse_unbounded(tree: Any, nodes: Any) -> None:
    for node in tree.find_all((nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
        raise ArtifactIntegrityError(f"{type(node).__name__.lower()} (line {node.lineno}) reads other templates; a "
                                     "chat template must be self-contained")
    for node in tree.find_all(nodes.For):
        if node.recursive:
            raise ArtifactIntegrityError(f"a recursive loop (line {node.lineno}) cannot be bounded; it is refused")
    for node in tree.find_all(nodes.Name):
        if node.name in _HELPERS:
            raise ArtifactIntegrityError(f"the name {node.name!r} (line {node.lineno}) is reserved")


def _bound(tree: Any, nodes: Any) -> None:
    """Every loop iterates through the budget; every ``~`` and every list, tuple and dict literal
    is sized before it is made (``~``) or kept (literals)."""
    def call(name: str, args: list, lineno: int) -> Any:
        return nodes.Call(nodes.Name(name, "load"), args, [], None, None).set_lineno(lineno)

    def bounded(node: Any) -> Any:
        if isinstance(node, nodes.Concat):
            return call("_bounded_concat", node.nodes, node.lineno)
        if isinstance(node, (nodes.List, nodes.Dict)) or (isinstance(node, nodes.Tuple) and node.ctx == "load"):
            return call("_bounded_value", [node], node.lineno)
        return node

    for loop in list(tree.find_all(nodes.For)):
        loop.iter = call("_bounded_iter", [loop.iter], loop.lineno)
    for parent in list(tree.find_all(nodes.Node)):
        for field in parent.fields:
            value = getattr(parent, field)
            if isinstance(value, nodes.Node):
                setattr(parent, field, bounded(value))
            elif isinstance(value, list):
                setattr(parent, field, [bounded(v) if isinstance(v, nodes.Node) else v for v in value])


def _bounded_iter(iterable: Any) -> Any:
    limits = budget()
    for item in iterable:
        limits.tick()
        yield item


def _bounded_concat(*values: Any) -> str:
    limits = budget()
    limits.tick(0)
    limits.size(sum(deep_size(v, limits.chars) for v in values), "string")
    for value in values:
        _printable(value)
    return "".join(v if isinstance(v, str) else str(v) for v in values)


def _bounded_items(limits: Budget, items: Iterator) -> Iterator:
    """``items`` one by one, each counted and sized, still an iterator as transformers' filter
    would get it (its length, its JSON and its text are errors or refusals in both)."""
    size = 0
    for item in items:
        limits.tick()
        size += deep_size(item, limits.chars)
        limits.size(size, "sequence")
        yield item


def _bounded_value(value: Any) -> Any:
    limits = budget()
    limits.size(deep_size(value, limits.chars), "literal")
    return value


def _bounded_join(parts: Any) -> str:
    parts = list(parts)
    budget().size(sum(len(p) for p in parts), "captured output")
    return "".join(parts)


def _range(*args: int) -> range:
    values = range(*args)
    if len(values) > MAX_RANGE:  # transformers' range (jinja2's sandbox) fails on it
        raise TemplateRefused(f"the chat template asked for a range of {len(values)} items; at most {MAX_RANGE}")
    if len(values) > budget().iterations:
        raise BoundExceeded(f"the chat template asked for a range of {len(values)} items, more than its budget")
    return values


def _lipsum(*args: Any, **kwargs: Any) -> None:
    raise TemplateRefused("the chat template called lipsum, whose text is random: no render can match the reference's")


# --- sizes before the step runs ----------------------------------------------------------------


def _check_binop(limits: Budget, operator: str, left: Any, right: Any) -> None:
    sized = (str, list, tuple)
    if operator == "*":
        for value, count in ((left, right), (right, left)):
            if isinstance(value, sized) and isinstance(count, int):
                unit = len(value) if isinstance(value, str) else deep_size(value, limits.chars)
                limits.size(unit * max(count, 0), "repeated value")
        if isinstance(left, int) and isinstance(right, int):
            _check_bits(left.bit_length() + right.bit_length())
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
        _check_bits(left.bit_length() * right)
    elif operator == "+" and isinstance(left, sized) and isinstance(right, sized):
        limits.size(deep_size(left, limits.chars) + deep_size(right, limits.chars), "concatenation")
    elif operator == "%" and isinstance(left, str):
        arguments = list(right.values()) if isinstance(right, dict) else \
            list(right) if isinstance(right, tuple) else [right]
        limits.size(_formatted_size(limits, left, arguments), "formatted string")


def _check_bits(bits: int) -> None:
    if bits > INT_BITS:
        raise BoundExceeded(f"the chat template made an integer of more than {INT_BITS} bits")


def _formatted_size(limits: Budget, text: str, arguments: list) -> int:
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


def _check_arguments(limits: Budget, args: tuple, kwargs: dict) -> None:
    """Arguments within the size cap, together, and integers (widths, counts) too."""
    values = (*args, *kwargs.values())
    limits.size(sum(deep_size(v, limits.chars) for v in values), "set of arguments")
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > limits.chars:
            limits.size(abs(value), "width or count")


def _check_call(limits: Budget, function: Any, args: tuple, kwargs: dict) -> None:
    _check_arguments(limits, args, kwargs)
    owner, name = getattr(function, "__self__", None), getattr(function, "__name__", "")
    if isinstance(owner, str) and name == "replace":
        _check_replace(limits, owner, *args[:2])
    elif isinstance(owner, str) and name in ("strip", "lstrip", "rstrip"):
        _check_strip_chars(args[0] if args else None)
    elif isinstance(owner, str) and name == "join" and args:
        _check_join(limits, args[0], owner)


def _check_replace(limits: Budget, text: Any, old: Any = "", new: Any = "", *_: Any, **__: Any) -> None:
    if not all(isinstance(v, str) for v in (text, old, new)):
        raise TemplateRefused("the chat template's replace takes strings only")
    count = text.count(old) if old else len(text) + 1
    limits.size(len(text) + count * len(new), "replaced string")


def _check_strip_chars(chars: Any) -> None:
    """Stripping tests each character against every one of ``chars``: time grows with both."""
    if isinstance(chars, str) and len(chars) > STRIP_CHARS:
        raise TemplateRefused(f"the chat template strips a set of {len(chars)} characters; at most {STRIP_CHARS} are "
                              "allowed")


def _check_words(text: Any, longest: int, what: str) -> None:
    """Refuse a text with a run of more than ``longest`` non-space or space characters, on which
    ``what`` takes time that grows with the run's square."""
    if not isinstance(text, str):
        return
    run = max(max(map(len, text.split()), default=0), max(map(len, _NON_SPACE.split(text))))
    if run > longest:
        raise TemplateRefused(f"the chat template's {what} met a word or space of {run} characters; it is bounded "
                              f"to {longest}, as its time grows with their square")


def _check_slow_filter_input(value: Any, what: str) -> None:
    size = deep_size(value, SLOW_FILTER_CHARS + 1)
    if size > SLOW_FILTER_CHARS:
        raise TemplateRefused(f"the chat template's {what} was given {size} characters or more; it takes at most "
                              f"{SLOW_FILTER_CHARS}, as it costs more time a character than a render's deadline allows")


def _check_join(limits: Budget, items: Any, separator: Any) -> None:
    if not isinstance(separator, str):
        raise TemplateRefused("the chat template's join takes a string separator")
    if isinstance(items, (list, tuple, dict, str, range)):
        limits.size(deep_size(items, limits.chars) + len(items) * len(separator), "joined string")


def _filter_checks(limits: Budget, name: str, values: list, kwargs: dict) -> None:
    """What each filter that can outgrow its inputs may make (``values``: the filter's positional
    arguments after any context, the filtered value first)."""
    value, rest = (values[0] if values else None), values[1:]
    if name == "join":
        _check_join(limits, value, rest[0] if rest else kwargs.get("d", ""))
    elif name == "replace":
        _check_replace(limits, value, *rest[:2], **{k: v for k, v in kwargs.items() if k in ("old", "new")})
    elif name == "format" and isinstance(value, str):
        limits.size(_formatted_size(limits, value, [*rest, *kwargs.values()]), "formatted string")
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
            raise TemplateRefused("the chat template's tojson indent or separators are beyond what JSON needs")
    elif name == "sum" and not isinstance(kwargs.get("start", rest[1] if len(rest) > 1 else 0), (int, float)):
        raise TemplateRefused("the chat template's sum adds numbers only")


# Filters that never turn their arguments into text; every other one gets printable arguments.
_OPAQUE_FILTERS = frozenset({"abs", "attr", "batch", "count", "d", "default", "dictsort", "first", "float", "groupby",
                             "int", "items", "last", "length", "list", "map", "max", "min", "reject", "rejectattr",
                             "reverse", "round", "select", "selectattr", "slice", "sort", "sum", "tojson", "unique"})


def _as_the_reference(name: str, values: list, kwargs: dict) -> None:
    """Refuses a filter call whose result could differ from transformers': ``random``, and
    text made of a value that does not print the same (see ``_printable``)."""
    if name == "random":
        raise TemplateRefused("the chat template used the random filter: no render can match the reference's")
    if name in _OPAQUE_FILTERS:
        return
    for value in (*values, *kwargs.values()):
        _printable(value)


def _filter_time_checks(name: str, values: list, kwargs: dict) -> None:
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
            raise TemplateRefused(f"the chat template pretty-prints a value nested more than {PPRINT_NESTING} deep; "
                                  "pprint's time grows with the size times the depth")
        _check_slow_filter_input(value, "pprint")
    elif name == "round":
        precision = rest[0] if rest else kwargs.get("precision", 0)
        if isinstance(precision, int) and abs(precision) > ROUND_DIGITS:
            raise TemplateRefused(f"the chat template rounds to {precision} digits; at most {ROUND_DIGITS} are allowed")


def _bounded_filter(name: str, function: Callable) -> Callable:
    def bounded(*args: Any, **kwargs: Any) -> Any:
        limits = budget()
        limits.tick(0)
        at = 1 if getattr(function, "jinja_pass_arg", None) else 0
        if len(args) > at and isinstance(args[at], Iterator) and type(args[at]).__name__ != "LoopContext":
            # made item by item, each sized (map, select...); a loop stays a loop (loop | attr('index'));
            # join makes a string of them either way, so it gets a list, sized with its separators
            items = _bounded_items(limits, args[at])
            args = (*args[:at], list(items) if name == "join" else items, *args[at + 1 :])
        _check_arguments(limits, args, kwargs)
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


def _piecewise_urlize(urlize: Callable) -> Callable:
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


# --- transformers' globals and filters ---------------------------------------------------------


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    """transformers' tojson: plain JSON, not HTML-escaped as jinja2's own filter writes it."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise TemplateFailed(f"the chat template refused this input: {str(message)[:300]}")


def _strftime_now(format: str) -> str:  # noqa: A002 (transformers' name)
    return datetime.now().strftime(format)


class _Dict:
    """``dict(...)`` for templates, as transformers gives it: a new dict, no class to walk from."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


def _namespace(jinja2: Any) -> Any:
    """jinja2's namespace, refusing underscore-prefixed names (no way into CPython internals)."""

    class Namespace(jinja2.utils.Namespace):
        def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 (jinja2's own signature trick)
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

    return Namespace

"""A sandboxed, bounded Jinja environment for chat templates, which are data from model folders.

The engine is the one transformers renders chat templates with: jinja2's immutable sandbox, with
transformers' options, filters and globals. On top of it, every render has a budget
(``Budget``), and the template is held to three rules:

1. *No Python objects beyond the variables.* Attributes are an allow-list per type (a few
   methods of str, dict, list and tuple; the public attributes of jinja2's loop, namespace,
   cycler and joiner), so ``__class__``, ``str.format``, ``encode`` or ``translate`` do not exist
   for a template; ``namespace`` refuses private names; the helpers this module compiles into
   the template cannot be named by it.
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
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import ArtifactIntegrityError, InvalidInputError, MissingDependencyError

JINJA2_MINIMUM = (3, 1, 6)  # transformers' own minimum: older sandboxes have known escapes
ITERATIONS = 100_000  # plus four per character of the conversation
SECONDS = 2.0  # plus a second per million characters, of the rendering thread's CPU time (see _clock)
BASE_CHARS = 1 << 20  # plus four per character
INT_BITS = 4096  # integers a template makes; no chat template needs more
_HELPERS = ("_bounded_iter", "_bounded_concat", "_bounded_value")
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?([#0\- +]*)(\*|\d*)(?:\.(\*|\d*))?")
# What a template may call or read on Python values; everything else is undefined to it.
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


class BoundExceeded(TemplateRefused):
    """A render stopped by the sandbox's bounds (time, iterations, sizes, recursion, memory), not
    by the template: transformers would have rendered it, so nothing may stand in for its result,
    and the deadline depends on how busy the machine is, so a refusal may not be remembered."""


@dataclass
class Budget:
    deadline: float
    iterations: int
    chars: int  # the most any one value may hold (see deep_size), and all output together

    @classmethod
    def for_input(cls, chars: int) -> Budget:
        return cls(deadline=_clock() + SECONDS + chars / 1e6, iterations=ITERATIONS + 4 * chars,
                   chars=BASE_CHARS + 4 * chars)

    def tick(self, iterations: int = 1) -> None:
        self.iterations -= iterations
        if self.iterations < 0:
            raise BoundExceeded("the chat template iterated more than its budget allows in one render")
        if _clock() > self.deadline:
            raise BoundExceeded("the chat template took too long to render one input")

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
    environment = _environment(jinja2, nodes)
    try:
        tree = environment.parse(source)
        _refuse_unbounded(tree, nodes)
        _bound(tree, nodes)
        tree.set_environment(environment)
        return environment.from_string(tree)
    except jinja2.TemplateSyntaxError as e:
        raise ArtifactIntegrityError(f"{where}: not a Jinja template ({e.message}, line {e.lineno})") from None
    except ArtifactIntegrityError as e:
        raise ArtifactIntegrityError(f"{where}: {e}") from None
    except (RecursionError, SyntaxError, MemoryError, ValueError) as e:  # nesting beyond what Python compiles
        raise ArtifactIntegrityError(f"{where}: cannot be compiled ({type(e).__name__}: {str(e)[:200]})") from None


def _environment(jinja2: Any, nodes: Any) -> Any:
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """``{% generation %}...{% endgeneration %}`` as transformers parses it, rendering its body
        (transformers only uses the block to mark assistant tokens)."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body).set_lineno(lineno)

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
        concat = staticmethod(_bounded_join)  # joins captured output: block sets, macros, filter blocks

        def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
            if not super().is_safe_attribute(obj, attr, value):
                return False
            allowed = next((names for kind, names in _ALLOWED.items() if isinstance(obj, kind)), None)
            if allowed is not None:
                return attr in allowed
            return type(obj).__module__.startswith("jinja2.") or type(obj).__name__ == "Namespace" or \
                isinstance(obj, _Dict)

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
            return super().call_binop(context, operator, left, right)

    environment = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                     extensions=[Generation, "jinja2.ext.loopcontrols"])
    environment.filters = {name: _bounded_filter(name, f) for name, f in {**environment.filters,
                                                                           "tojson": _tojson}.items()}
    environment.globals = {"range": _range, "dict": _Dict(), "namespace": _namespace(jinja2),
                           "raise_exception": _raise_exception, "strftime_now": _strftime_now,
                           "cycler": environment.globals["cycler"], "joiner": environment.globals["joiner"],
                           "lipsum": _lipsum(environment.globals["lipsum"]), "_bounded_iter": _bounded_iter,
                           "_bounded_concat": _bounded_concat, "_bounded_value": _bounded_value}
    return environment


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
    return "".join(v if isinstance(v, str) else str(v) for v in values)


def _bounded_list(limits: Budget, items: Iterator) -> list:
    values, size = [], 0
    for item in items:
        limits.tick()
        size += deep_size(item, limits.chars)
        limits.size(size, "sequence")
        values.append(item)
    return values


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
    if len(values) > budget().iterations:
        raise BoundExceeded(f"the chat template asked for a range of {len(values)} items, more than its budget")
    return values


def _lipsum(lipsum: Any) -> Any:
    def bounded(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> Any:  # noqa: A002 (jinja2's names)
        if n > 100 or max > 1000:
            raise BoundExceeded("lipsum is bounded to 100 paragraphs of 1000 words")
        return lipsum(n=n, html=html, min=min, max=max)

    return bounded


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
    elif isinstance(owner, str) and name == "join" and args:
        _check_join(limits, args[0], owner)


def _check_replace(limits: Budget, text: Any, old: Any = "", new: Any = "", *_: Any, **__: Any) -> None:
    if not all(isinstance(v, str) for v in (text, old, new)):
        raise TemplateRefused("the chat template's replace takes strings only")
    count = text.count(old) if old else len(text) + 1
    limits.size(len(text) + count * len(new), "replaced string")


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


def _bounded_filter(name: str, function: Callable) -> Callable:
    def bounded(*args: Any, **kwargs: Any) -> Any:
        limits = budget()
        limits.tick(0)
        at = 1 if getattr(function, "jinja_pass_arg", None) else 0
        if len(args) > at and isinstance(args[at], Iterator):  # made item by item, each sized (map, select...)
            args = (*args[:at], _bounded_list(limits, args[at]), *args[at + 1 :])
        _check_arguments(limits, args, kwargs)
        values = list(args[at:])
        _filter_checks(limits, name, values, kwargs)
        result = function(*args, **kwargs)
        limits.size(deep_size(result, limits.chars), "filter result")
        return result

    if hasattr(function, "jinja_pass_arg"):  # jinja2 passes the context/environment to marked filters
        bounded.jinja_pass_arg = function.jinja_pass_arg  # type: ignore[attr-defined]
    return bounded


# --- transformers' globals and filters ---------------------------------------------------------


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    """transformers' tojson: plain JSON, not HTML-escaped as jinja2's own filter writes it."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise TemplateRefused(f"the chat template refused this input: {str(message)[:300]}")


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

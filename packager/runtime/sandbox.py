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
This module holds the environment, its attributes and globals, and what the compiler rewrites
into the template; the budget and the checks before each step are in ``render_checks``, the
filters' and methods' bounds in ``render_filters``, and what compiling may cost in ``folding``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .errors import ArtifactIntegrityError, MissingDependencyError
from .render_checks import (
    BoundExceeded,
    TemplateFailed,
    TemplateRefused,
    bounded_concat,
    budget,
    check_binop,
    deep_size,
    printable,
)
from .render_filters import bounded_filter, check_call, piecewise_urlize, tojson

MAX_RANGE = 100_000  # jinja2.sandbox.MAX_RANGE: the reference's range refuses more
JINJA2_MINIMUM = (3, 1, 6)  # transformers' own minimum: older sandboxes have known escapes
SOURCE_CHARS = 1 << 20  # a template's source; real ones are a few kB
_HELPERS = ("_bounded_iter", "_bounded_concat", "_bounded_value")
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
            check_call(limits, __obj, args, kwargs)
            result = super().call(__context, __obj, *args, **kwargs)
            limits.size(deep_size(result, limits.chars), "call result")
            return result

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            limits = budget()
            limits.tick(0)
            check_binop(limits, operator, left, right)
            if operator == "%" and isinstance(left, str):
                printable(right)
            return super().call_binop(context, operator, left, right)

    environment = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, finalize=printable,
                                     extensions=[Generation, "jinja2.ext.loopcontrols"])
    filters = {**environment.filters, "tojson": tojson, "urlize": piecewise_urlize(environment.filters["urlize"])}
    environment.filters = {name: bounded_filter(name, f) for name, f in filters.items()}
    environment.globals = {"range": _range, "dict": _Dict(), "namespace": _namespace(jinja2),
                           "raise_exception": _raise_exception, "strftime_now": _strftime_now,
                           "cycler": environment.globals["cycler"], "joiner": environment.globals["joiner"],
                           "lipsum": _lipsum, "_bounded_iter": _bounded_iter,
                           "_bounded_concat": bounded_concat, "_bounded_value": _bounded_value}
    environment.tests = {**environment.tests, "lower": _printing_test(environment.tests["lower"]),
                         "upper": _printing_test(environment.tests["upper"])}
    return environment


def _exposed(obj: Any, attr: str) -> bool:
    """Whether the allow-list lets a template read ``attr`` of ``obj``."""
    allowed = next((names for kind, names in _ALLOWED.items() if isinstance(obj, kind)), None)
    if allowed is not None:
        return attr in allowed
    return type(obj).__module__.startswith("jinja2.") or type(obj).__name__ == "Namespace" or isinstance(obj, _Dict)


def _printing_test(test: Any) -> Callable:
    """jinja2's ``lower`` and ``upper`` tests read ``str(value)``: only for printable values."""
    def checked(value: Any) -> bool:
        return bool(test(printable(value)))

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


# --- transformers' globals and filters ---------------------------------------------------------


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

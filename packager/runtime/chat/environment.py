"""The Jinja environment chat templates render in: jinja2's immutable sandbox with transformers'
options, filters, tests and globals, its attributes an allow-list, and every call and operator
checked against the render's budget first. Imported only once jinja2 is known to be there
(``sandbox.compile_template``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from . import template_globals
from .budget import budget, deep_size
from .checks import bounded_concat, check_binop, printable
from .errors import TemplateRefusedError
from .filters import bounded_filter, check_call, piecewise_urlize, tojson
from .rewrite import bounded_iter, bounded_join, bounded_value

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


class Generation(Extension):
    """``{% generation %}...{% endgeneration %}`` as transformers parses it: a call block whose
    body is rendered as its caller (so its scoping is transformers'; transformers only uses the
    block to mark assistant tokens)."""

    tags = {"generation"}  # noqa: RUF012 (jinja2's Extension declares tags as a plain class attribute)

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_generation"), [], [], body).set_lineno(lineno)

    @jinja2.pass_eval_context
    def _generation(self, context: Any, caller: Callable[[], str]) -> str:
        return caller()


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    concat = staticmethod(bounded_join)  # joins captured output: block sets, macros, filter blocks

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """Hidden as transformers' sandbox hides it (the same undefined), or exposed, or refused:
        never undefined here where transformers' template would read it."""
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if _exposed(obj, attr):
            return True
        raise TemplateRefusedError(f"the chat template reads {attr!r} of a {type(obj).__name__} value, which the "
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


def bounded_environment() -> BoundedEnvironment:
    """A new environment with transformers' options, and its filters, globals and tests bounded."""
    environment = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, finalize=printable,
                                     extensions=[Generation, "jinja2.ext.loopcontrols"])
    environment.filters = _filters(environment)
    environment.globals = _globals(environment)
    environment.tests = _tests(environment)
    return environment


def _filters(environment: BoundedEnvironment) -> dict[str, Callable[..., Any]]:
    filters = {**environment.filters, "tojson": tojson, "urlize": piecewise_urlize(environment.filters["urlize"])}
    return {name: bounded_filter(name, f) for name, f in filters.items()}


def _globals(environment: BoundedEnvironment) -> dict[str, Any]:
    """transformers' globals, bounded, and the helpers ``rewrite`` compiles into the template."""
    return {"range": template_globals.bounded_range, "dict": template_globals.TemplateDict(),
            "namespace": template_globals.Namespace, "raise_exception": template_globals.raise_exception,
            "strftime_now": template_globals.strftime_now, "cycler": environment.globals["cycler"],
            "joiner": environment.globals["joiner"], "lipsum": template_globals.lipsum,
            "_bounded_iter": bounded_iter, "_bounded_concat": bounded_concat,
            "_bounded_value": bounded_value}


def _tests(environment: BoundedEnvironment) -> dict[str, Any]:
    return {**environment.tests, "lower": _printing_test(environment.tests["lower"]),
            "upper": _printing_test(environment.tests["upper"])}


def _exposed(obj: Any, attr: str) -> bool:
    """Whether the allow-list lets a template read ``attr`` of ``obj``."""
    allowed = next((names for kind, names in _ALLOWED.items() if isinstance(obj, kind)), None)
    if allowed is not None:
        return attr in allowed
    return (type(obj).__module__.startswith("jinja2.") or type(obj).__name__ == "Namespace"
            or isinstance(obj, template_globals.TemplateDict))


def _printing_test(test: Any) -> Callable[[Any], bool]:
    """jinja2's ``lower`` and ``upper`` tests read ``str(value)``: only for printable values."""
    def checked(value: Any) -> bool:
        return bool(test(printable(value)))

    return checked

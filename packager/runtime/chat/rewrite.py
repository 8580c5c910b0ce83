"""What the compiler rewrites into a chat template, and what it refuses to compile.

``refuse_unbounded`` refuses ``include``, ``extends``, ``import``, recursive loops and the names
of the helpers; ``bound`` makes every loop iterate through the budget (``bounded_iter``) and
every ``~`` and list, tuple and dict literal sized before it is made or kept (``bounded_concat``,
``bounded_value``). ``bounded_join`` is the environment's join of captured output.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from jinja2 import nodes

from ..errors import ArtifactIntegrityError
from .budget import budget, deep_size

# The globals the rewritten template calls; a template may not name them itself.
_HELPERS = ("_bounded_iter", "_bounded_concat", "_bounded_value")


def refuse_unbounded(tree: nodes.Template) -> None:
    for node in tree.find_all((nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
        raise ArtifactIntegrityError(f"{type(node).__name__.lower()} (line {node.lineno}) reads other templates; a "
                                     "chat template must be self-contained")
    for loop in tree.find_all(nodes.For):
        if loop.recursive:
            raise ArtifactIntegrityError(f"a recursive loop (line {loop.lineno}) cannot be bounded; it is refused")
    for name in tree.find_all(nodes.Name):
        if name.name in _HELPERS:
            raise ArtifactIntegrityError(f"the name {name.name!r} (line {name.lineno}) is reserved")


def bound(tree: nodes.Template) -> None:
    """Every loop iterates through the budget; every ``~`` and every list, tuple and dict literal
    is sized before it is made (``~``) or kept (literals)."""
    for loop in list(tree.find_all(nodes.For)):
        loop.iter = _call("_bounded_iter", [loop.iter], loop.lineno)
    for parent in list(tree.find_all(nodes.Node)):
        for field in parent.fields:
            value = getattr(parent, field)
            if isinstance(value, nodes.Node):
                setattr(parent, field, _bounded(value))
            elif isinstance(value, list):
                setattr(parent, field, [_bounded(v) if isinstance(v, nodes.Node) else v for v in value])


def _call(name: str, args: list[Any], lineno: int) -> nodes.Node:
    return nodes.Call(nodes.Name(name, "load"), args, [], None, None).set_lineno(lineno)


def _bounded(node: nodes.Node) -> nodes.Node:
    if isinstance(node, nodes.Concat):
        return _call("_bounded_concat", node.nodes, node.lineno)
    if isinstance(node, (nodes.List, nodes.Dict)) or (isinstance(node, nodes.Tuple) and node.ctx == "load"):
        return _call("_bounded_value", [node], node.lineno)
    return node


def bounded_iter(iterable: Iterable[Any]) -> Iterator[Any]:
    limits = budget()
    for item in iterable:
        limits.tick()
        yield item


def bounded_value(value: Any) -> Any:
    limits = budget()
    limits.size(deep_size(value, limits.chars), "literal")
    return value


def bounded_join(parts: Iterable[str]) -> str:
    parts = list(parts)
    budget().size(sum(len(p) for p in parts), "captured output")
    return "".join(parts)

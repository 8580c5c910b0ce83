"""What a chat template costs to *compile*, bounded before a recursive parser or a constant folder
sees it.

Compiling a template is not free: jinja2's parser and code generator recurse once or more per
level of nesting, Python's compiler has its own limits (20 nested blocks, 200 nested
parentheses), and jinja2's optimizer evaluates every constant expression at compile time
(``{{ 'a' * 10**9 }}`` is a 1 GB string before anything renders). The build compiles a source's
template with transformers' stock sandbox, which folds what ours refuses, so these checks run on
the source first, both when the build reads a model folder and whenever the runtime compiles:

- ``check_nesting``: from the lexer's token stream (a regular-expression scan, no recursion),
  the template's blocks nest at most ``BLOCK_NESTING`` deep, brackets at most
  ``BRACKET_NESTING``, one expression's syntax tree at most ``EXPRESSION_DEPTH`` deep (bounded
  by its brackets and the operators at each level), and number literals have at most
  ``LITERAL_DIGITS`` characters;
- ``check_constants``: every expression jinja2 would fold is evaluated with the render's bounded
  operations (sizes checked before anything is made, ``Budget``), all of them together within
  ``FOLDED_CHARS`` and the render deadline; a value jinja2 cannot write into the compiled code,
  which it would remake at every enclosing expression, is refused unless making it is O(1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .bounds import BLOCK_NESTING, BRACKET_NESTING, EXPRESSION_DEPTH, FOLDED_CHARS, LITERAL_DIGITS
from .budget import Budget, bounded, budget, deep_size
from .checks import bounded_concat, check_binop
from .errors import TemplateRefusedError

_OPENERS = frozenset({"for", "if", "macro", "call", "filter", "with", "autoescape", "block", "generation", "set"})
_WORD_OPERATORS = frozenset({"and", "or", "not", "in", "is", "if", "else"})
# They do not nest: a literal's items, a call's arguments and a chain of ~ are one node's children.
_SEPARATORS = frozenset({",", ":", "=", "~"})


class _NotConstantError(Exception):
    """Not a constant: jinja2 does not fold it."""


def check_nesting(environment: Any, source: str) -> None:
    """Refuse (``TemplateRefusedError``) a template nested deeper than its compilers can take."""
    blocks, keyword, assigns = 0, None, False
    levels: list[list[int]] = [[0, 0]]  # per open bracket: operators in it, deepest bracket in it
    for lineno, token, value in environment.lexer.tokeniter(source, None):
        if token in ("block_begin", "variable_begin"):
            levels, keyword, assigns = [[0, 0]], "" if token == "block_begin" else None, False
        elif token in ("block_end", "variable_end"):
            _check_depth(levels[0][0] + levels[0][1], lineno)
            if keyword is not None:
                blocks = _nested_blocks(blocks, keyword, assigns, lineno)
        elif token == "operator":
            assigns = assigns or (value == "=" and len(levels) == 1)
            levels = _operator(levels, value, lineno)
        elif token == "name" and keyword == "":
            keyword = value
        elif token == "name" and value in _WORD_OPERATORS:
            levels[-1][0] += 1
        elif token in ("integer", "float") and len(value) > LITERAL_DIGITS:
            raise TemplateRefusedError(f"a number literal of {len(value)} characters (line {lineno}); at most "
                                       f"{LITERAL_DIGITS} are allowed")


def _operator(levels: list[list[int]], value: str, lineno: int) -> list[list[int]]:
    if value in "([{":
        levels.append([0, 0])
        if len(levels) > BRACKET_NESTING + 1:
            raise TemplateRefusedError(f"brackets nested more than {BRACKET_NESTING} deep (line {lineno})")
    elif value in ")]}" and len(levels) > 1:
        count, deepest = levels.pop()
        levels[-1][1] = max(levels[-1][1], count + deepest + 1)
    elif value not in _SEPARATORS:
        levels[-1][0] += 1
        _check_depth(levels[-1][0], lineno)
    return levels


def _check_depth(depth: int, lineno: int) -> None:
    if depth > EXPRESSION_DEPTH:
        raise TemplateRefusedError(f"an expression nested more than {EXPRESSION_DEPTH} levels deep (line {lineno}: "
                                   "brackets and the operators inside each); split it with {% set %}")


def _nested_blocks(blocks: int, keyword: str, assigns: bool, lineno: int) -> int:
    if keyword.startswith("end"):
        return blocks - 1
    if keyword in _OPENERS and not (keyword == "set" and assigns):  # {% set x = 1 %} has no body
        blocks += 1
        if blocks > BLOCK_NESTING:
            raise TemplateRefusedError(f"blocks nested more than {BLOCK_NESTING} deep (line {lineno})")
    return blocks


def check_constants(environment: Any, tree: Any, nodes: Any, *, chars: int) -> None:
    """Evaluate every expression jinja2's optimizer would fold, with the bounded operations and
    the budget of a render of ``chars`` characters (the template's size); ``TemplateRefusedError`` for
    one that a render would refuse, or for all of them together beyond ``FOLDED_CHARS`` or the
    deadline."""
    folder = _Folder(environment, nodes)
    with bounded(Budget.for_input(chars)):
        for node in tree.find_all(nodes.Expr):
            with contextlib.suppress(_NotConstantError):
                folder.fold(node)


class _Folder:
    """jinja2's ``Node.as_const`` of every node type it folds, through the render's bounded
    operations, each node evaluated once (jinja2 may evaluate one many times: see ``_kept``)."""

    def __init__(self, environment: Any, nodes: Any) -> None:
        from jinja2.compiler import has_safe_repr

        self.environment, self.nodes, self.safe = environment, nodes, has_safe_repr
        self.eval_ctx = nodes.EvalContext(environment)
        self.values: dict[int, Any] = {}  # id(node) -> value, or the _NotConstantError class
        self.folded = 0

    def fold(self, node: Any) -> Any:
        """The node's constant value; raises _NotConstantError where jinja2 would not fold it."""
        key = id(node)
        if key not in self.values:
            budget().tick()
            try:
                self.values[key] = self._kept(node, self._evaluate(node))
            except TemplateRefusedError:
                raise
            except Exception:  # _NotConstantError, or an operation that fails: jinja2 does not fold it either
                self.values[key] = _NotConstantError
        value = self.values[key]
        if value is _NotConstantError:
            raise _NotConstantError
        return value

    def _kept(self, node: Any, value: Any) -> Any:
        if isinstance(node, (self.nodes.Const, self.nodes.TemplateData)):
            return value  # the source's own text, bounded by its size
        if self.safe(value):  # written into the compiled code once, then read from there
            self.folded += deep_size(value, FOLDED_CHARS)
            if self.folded > FOLDED_CHARS:
                raise TemplateRefusedError(f"the template's constant expressions make more than {FOLDED_CHARS} "
                                           f"characters together (line {node.lineno}); jinja2 computes them when it "
                                           "compiles")
        elif not (isinstance(node, (self.nodes.Getattr, self.nodes.Slice))
                  or isinstance(value, (Iterator, self.environment.undefined))):  # made in O(1): lazy, or a lookup
            raise TemplateRefusedError(f"a constant expression (line {node.lineno}) makes a {type(value).__name__}, "
                                       "which jinja2 would make again for every expression around it when it compiles")
        return value

    def _evaluate(self, node: Any) -> Any:
        nodes = self.nodes
        if isinstance(node, nodes.Const):
            return node.value
        if isinstance(node, nodes.TemplateData):
            return node.data
        if isinstance(node, nodes.List) or (isinstance(node, nodes.Tuple) and node.ctx == "load"):
            items = [self.fold(item) for item in node.items]
            return tuple(items) if isinstance(node, nodes.Tuple) else items
        if isinstance(node, nodes.Dict):
            return {self.fold(pair.key): self.fold(pair.value) for pair in node.items}
        if isinstance(node, nodes.BinExpr):
            return self._binop(node.operator, self.fold(node.left), self.fold(node.right))
        if isinstance(node, nodes.Not):
            return not self.fold(node.node)
        if isinstance(node, nodes.UnaryExpr):
            return nodes._uaop_to_func[node.operator](self.fold(node.node))
        if isinstance(node, (nodes.And, nodes.Or)):
            return self._logic(node)
        if isinstance(node, nodes.Concat):
            return bounded_concat(*(self.fold(item) for item in node.nodes))
        return self._evaluate_more(node)

    def _evaluate_more(self, node: Any) -> Any:
        nodes, environment = self.nodes, self.environment
        if isinstance(node, nodes.Compare):
            return self._compare(node)
        if isinstance(node, nodes.CondExpr):
            branch = node.expr1 if self.fold(node.test) else node.expr2
            if branch is None:
                raise _NotConstantError
            return self.fold(branch)
        if isinstance(node, (nodes.Filter, nodes.Test)):
            return self._filter(node)
        if isinstance(node, nodes.Getattr) and node.ctx == "load":
            return environment.getattr(self.fold(node.node), node.attr)
        if isinstance(node, nodes.Getitem) and node.ctx == "load":
            return environment.getitem(self.fold(node.node), self.fold(node.arg))
        if isinstance(node, nodes.Slice):
            return slice(*(None if part is None else self.fold(part) for part in (node.start, node.stop, node.step)))
        if isinstance(node, nodes.MarkSafe):
            from markupsafe import Markup

            return Markup(self.fold(node.expr))
        if isinstance(node, nodes.MarkSafeIfAutoescape):
            return self.fold(node.expr)
        raise _NotConstantError  # names, calls, and whatever else jinja2 does not fold

    def _binop(self, operator: str, left: Any, right: Any) -> Any:
        check_binop(budget(), operator, left, right)
        return self.nodes._binop_to_func[operator](left, right)

    def _logic(self, node: Any) -> Any:
        left = self.fold(node.left)
        if bool(left) == isinstance(node, self.nodes.Or):
            return left
        return self.fold(node.right)

    def _compare(self, node: Any) -> Any:
        value = self.fold(node.expr)
        for operand in node.ops:
            new = self.fold(operand.expr)
            if not self.nodes._cmpop_to_func[operand.op](value, new):
                return False
            value = new
        return True

    def _filter(self, node: Any) -> Any:
        from jinja2.utils import _PassArg

        table = self.environment.filters if isinstance(node, self.nodes.Filter) else self.environment.tests
        function = table.get(node.name)
        passed = _PassArg.from_obj(function) if function is not None else None
        if function is None or node.node is None or passed is _PassArg.context:
            raise _NotConstantError  # jinja2 folds neither these nor a filter block's body
        args = [self.fold(arg) for arg in node.args]
        kwargs = {keyword.key: self.fold(keyword.value) for keyword in node.kwargs}
        if node.dyn_args is not None:
            args.extend(self.fold(node.dyn_args))
        if node.dyn_kwargs is not None:
            kwargs.update(self.fold(node.dyn_kwargs))
        first = [self.eval_ctx] if passed is _PassArg.eval_context else \
            [self.environment] if passed is _PassArg.environment else []
        return function(*first, self.fold(node.node), *args, **kwargs)

"""Compiling a chat template, which is data from a model folder, into a sandboxed, bounded one.

The engine is the one transformers renders chat templates with: jinja2's immutable sandbox, with
transformers' options, filters and globals (``environment``). On top of it, every render has a
budget (``budget.Budget``), and the template is held to three rules:

1. *No Python objects beyond the variables.* Attributes are an allow-list per type (a few
   methods of str, dict, list and tuple; the public attributes of jinja2's loop, namespace,
   cycler and joiner); ``namespace`` refuses private names; the helpers the compiler rewrites
   into the template cannot be named by it.
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
This module compiles; the environment is in ``environment``, what the compiler rewrites into the
template in ``rewrite``, the globals in ``template_globals``, the budget in ``budget`` and the
checks before each step in ``checks``, the filters' and methods' bounds in ``filters``, what
compiling may cost in ``folding``, and every numeric bound in ``bounds``.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import ArtifactIntegrityError, MissingDependencyError
from .bounds import SOURCE_CHARS
from .errors import TemplateRefusedError

JINJA2_MINIMUM = (3, 1, 6)  # transformers' own minimum: older sandboxes have known escapes


def compile_template(source: str, where: str) -> Any:
    """The bounded template, or ArtifactIntegrityError naming what cannot be bounded."""
    jinja2 = _jinja2()
    # imported once jinja2 is known to be there and recent enough: they import it
    from . import rewrite
    from .environment import bounded_environment
    from .folding import check_constants, check_nesting

    environment = bounded_environment()
    try:
        if len(source) > SOURCE_CHARS:
            raise TemplateRefusedError(f"{len(source)} characters, more than the {SOURCE_CHARS} a chat template may "
                                       "have")
        check_nesting(environment, source)  # before the recursive parser
        tree = environment.parse(source)
        rewrite.refuse_unbounded(tree)
        check_constants(environment, tree, jinja2.nodes, chars=len(source))  # what jinja2 computes when it compiles
        rewrite.bound(tree)
        tree.set_environment(environment)
        return environment.from_string(tree)
    except jinja2.TemplateSyntaxError as e:
        raise ArtifactIntegrityError(f"{where}: not a Jinja template ({e.message}, line {e.lineno})") from None
    except (ArtifactIntegrityError, TemplateRefusedError) as e:
        raise ArtifactIntegrityError(f"{where}: {e}") from None
    except (RecursionError, SyntaxError, MemoryError, ValueError) as e:  # nesting beyond what Python compiles
        raise ArtifactIntegrityError(f"{where}: cannot be compiled ({type(e).__name__}: {str(e)[:200]})") from None


def _jinja2() -> Any:
    """jinja2, or MissingDependencyError: only artifacts with a chat template need it, at
    JINJA2_MINIMUM or later."""
    try:
        import jinja2
        import jinja2.nodes
    except ImportError as e:
        raise MissingDependencyError("this artifact renders a chat template and needs jinja2: pip install "
                                     "'jinja2>=3.1.6'") from e
    version = tuple(int(p) for p in re.findall(r"\d+", jinja2.__version__)[:3])
    if version < JINJA2_MINIMUM:
        raise MissingDependencyError(f"chat templates need jinja2>=3.1.6 (older sandboxes have known escapes); "
                                     f"found {jinja2.__version__}: pip install -U 'jinja2>=3.1.6'")
    return jinja2

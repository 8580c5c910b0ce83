"""Chat templates, rendered as sentence-transformers renders them, in a sandbox with bounds.

One job per module:

- ``template``: ``ChatTemplate``, the conversations a route's texts become and their render;
- ``sandbox``: compiling a template (``compile_template``), which is data from a model folder;
- ``environment``: jinja2's immutable sandbox with transformers' options, its attributes an
  allow-list; ``template_globals``: transformers' globals, bounded; ``rewrite``: what the
  compiler rewrites into a template (loops and literals through the budget) or refuses;
- ``budget``: what one render may spend, and ``deep_size``; ``checks``: the checks before each
  operator and print; ``filters``: the filters' and methods' bounds; ``folding``: what compiling
  may cost; ``bounds``: every numeric bound of the above; ``errors``: why a render stopped.

Only ``sandbox`` imports the jinja2-dependent modules, and only when a template is compiled:
artifacts without a chat template never need jinja2.
"""

from __future__ import annotations

from .errors import BoundExceededError, TemplateFailedError, TemplateRefusedError
from .sandbox import compile_template
from .template import PAIR_ROLES, SKELETON_FILLERS, ChatTemplate, TextInput

__all__ = [
    "PAIR_ROLES",
    "SKELETON_FILLERS",
    "BoundExceededError",
    "ChatTemplate",
    "TemplateFailedError",
    "TemplateRefusedError",
    "TextInput",
    "compile_template",
]

"""Chat templates rendered as sentence-transformers renders them, without transformers.

A route whose Transformer takes chat messages gets its texts as conversations: a text is one
``user`` message, a pair a ``query`` and a ``document`` message, a prompt a leading ``system``
message. The model's Jinja template renders them with the variables transformers passes (the
special tokens, ``add_generation_prompt``, the chat-template kwargs, and ``task`` where the
template declares it), in the engine transformers itself uses: jinja2's immutable sandbox, with
the same options, filters and globals.

The template is data from a model folder: it is compiled by ``sandbox``, which keeps it from
Python objects beyond those variables, and every render is bounded by its ``Budget``.
"""

from __future__ import annotations

import copy
from typing import Any

from ..enums import MessageFormat
from ..routes import ChatSpec
from .budget import Budget, bounded
from .errors import BoundExceededError, TemplateFailedError, TemplateRefusedError
from .sandbox import compile_template

TextInput = str | tuple[str, str]
PAIR_ROLES = ("query", "document")
# What the restore of a truncated render's tail fills the content with: two fillers that tokenize
# differently, so the common token suffix of the two renders is the template's own tail.
SKELETON_FILLERS = ("0", "1 2 3 4")


class ChatTemplate:
    """One route's compiled template and how conversations are made for it. Thread-safe: every
    render has its own budget."""

    def __init__(self, source: str, spec: ChatSpec, *, where: str = "chat template") -> None:
        self.spec = spec
        self._template = compile_template(source, where)

    def conversation(self, item: TextInput, prompt: str | None) -> list[dict[str, Any]]:
        """sentence-transformers' messages for one text or pair, with the prompt as a leading
        system message (an empty prompt is no prompt)."""
        if isinstance(item, str):
            messages = [self._message("user", item)]
        else:
            messages = [self._message(role, text) for role, text in zip(PAIR_ROLES, item, strict=True)]
        return [self._message("system", prompt), *messages] if prompt else messages

    def skeleton(self, conversation: list[dict[str, Any]], filler: str) -> list[dict[str, Any]]:
        """The conversation with every non-system message's content replaced by ``filler``."""
        return [m if m["role"] == "system" else self._message(m["role"], filler) for m in conversation]

    def render(self, conversation: list[dict[str, Any]], *, task: str | None) -> str:
        """The template's text for ``conversation``, within the bounds of ``sandbox``."""
        variables = dict(self.spec.variables)
        if task is not None and self.spec.task_variable:
            variables = {"task": task, **variables}
        # a copy, as transformers renders one: a template can change what it is given ('indent'
        # appends to a list), and the caller's conversation is rendered again (the suffix restore)
        context = {"tools": None, "documents": None, "add_generation_prompt": False, **variables,
                   "messages": copy.deepcopy(conversation)}
        with bounded(Budget.for_input(sum(len(_content_text(m)) for m in conversation))) as limits:
            try:
                parts, size = [], 0
                for part in self._template.generate(**context):
                    size += len(part)
                    limits.size(size, "rendered text")
                    parts.append(part)
                return "".join(parts)
            except TemplateRefusedError:
                raise
            except RecursionError:
                raise BoundExceededError("the chat template recursed too deeply") from None
            except MemoryError:
                raise BoundExceededError("the chat template ran out of memory") from None
            except Exception as e:
                # jinja2's own errors (an undefined operation, the sandbox's SecurityError) are the
                # template's failure, as in the reference; anything else may have come from the
                # runtime's own wrapping, where transformers would have rendered: a refusal
                failed = type(e).__module__.startswith("jinja2.")
                raise (TemplateFailedError if failed else TemplateRefusedError)(
                    f"the chat template failed: {type(e).__name__}: {str(e)[:300]}") from None

    def _message(self, role: str, text: str) -> dict[str, Any]:
        if self.spec.message_format is MessageFormat.FLAT:
            return {"role": role, "content": text}
        return {"role": role, "content": [{"type": "text", "text": text}]}


def _content_text(message: dict[str, Any]) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)

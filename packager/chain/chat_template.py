"""A message-modality Transformer's chat template and everything its render depends on, resolved
from the loaded module into the manifest (``ChatSpec``) and a template file for the artifact."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from packager.chain.processing import CHAT_OPTIONS, CHAT_REFUSED, CHAT_SIZE_KEYS
from packager.chain.spec import ModuleSpec
from packager.chain.st_internals import chat_template_declares_task
from packager.errors import ArtifactIntegrityError, SourceError, UnsafeSourceError, UnsupportedModuleError
from packager.runtime.chat import compile_template
from packager.runtime.enums import MessageFormat
from packager.runtime.files import read_json, read_text
from packager.runtime.routes import ChatSpec
from packager.runtime.text import TEMPLATE_LIMIT

TEMPLATE_FILE = "chat_template.jinja"  # renamed per route by the build when routes differ
CONFIG_LIMIT = 64 << 20  # as the chain reader's
TEMPLATES_CHARS = 4 << 20  # all of a folder's chat templates together
# Each compile is bounded (size, nesting, and its constants within the render's deadline), so their
# number bounds the whole check: real folders hold one to a few (a default, tool use, RAG)
TEMPLATES = 16
# Where transformers and sentence-transformers read chat templates from: any .jinja file
# (chat_template.jinja, additional_chat_templates/NAME.jinja), and a "chat_template" key in a
# config: tokenizer_config.json (a string, or a list of named templates), chat_template.json and
# processor configs, a Transformer's processing_kwargs (an inline template).
_TEMPLATE_KEY = "chat_template"


def check_chat_templates(folder: Path, files: list[str]) -> None:
    """Every chat template in the source compiled by the runtime's bounded compiler first
    (``packager.runtime.chat.compile_template``): sentence-transformers hands templates to
    transformers' stock jinja2 sandbox, whose compiler evaluates constant expressions and recurses
    through nesting without bounds. A template refused here is refused before that happens."""
    total = count = 0
    for rel in files:
        for where, source in _templates(folder, rel):
            total, count = total + len(source), count + 1
            if count > TEMPLATES:
                raise UnsafeSourceError(f"{where}: the folder holds more than {TEMPLATES} chat templates; real ones "
                                        "hold one to a few")
            if total > TEMPLATES_CHARS:
                raise UnsafeSourceError(f"{where}: the folder's chat templates hold more than {TEMPLATES_CHARS} "
                                        "characters together; real ones hold a few thousand")
            try:
                compile_template(source, where)
            except ArtifactIntegrityError as e:
                raise UnsafeSourceError(f"{e}. Chat templates are data from the model folder; this one is refused "
                                        "before sentence-transformers or transformers compile it.") from None


def _templates(folder: Path, rel: str) -> Iterator[tuple[str, str]]:
    name = PurePosixPath(rel).name
    if name.endswith(".jinja"):
        yield rel, read_text(folder / rel, limit=TEMPLATE_LIMIT, error=UnsafeSourceError)
    elif name.endswith(".json") and ("config" in name or name == "chat_template.json"):
        stack = [(rel, read_json(folder / rel, limit=CONFIG_LIMIT, error=SourceError), False)]
        while stack:  # JSON nests as deep as Python parsed it, so no recursion here
            where, value, inside = stack.pop()
            if isinstance(value, str) and inside:
                yield where, value
            elif isinstance(value, dict):
                stack.extend((f"{where}: {key}", item, inside or key == _TEMPLATE_KEY) for key, item in value.items())
            elif isinstance(value, list):
                stack.extend((f"{where}[{i}]", item, inside) for i, item in enumerate(value))


def takes_messages(spec: ModuleSpec) -> bool:
    """Whether sentence-transformers turns this module's texts into chat messages."""
    return "message" in (spec.config.get("modality_config") or {})


def resolve_chat(spec: ModuleSpec, module: Any) -> tuple[ChatSpec, str] | None:
    """The chat settings and template source of a message-modality Transformer; None for others."""
    if not takes_messages(spec):
        return None
    tokenizer: Any = getattr(module, "tokenizer", None)
    vision = spec.takes_vision_messages  # a Qwen-VL processor renders the messages with its own template
    if tokenizer is None or not (vision or _is_tokenizer_processor(module)):
        raise UnsupportedModuleError(f"module {spec.name!r}: its processor ({type(module.processor).__name__}) is "
                                     "not a tokenizer; only text-only chat templates are compiled")
    kwargs = dict((getattr(module, "processing_kwargs", None) or {}).get("chat_template") or {})
    try:
        source = _processor_template(module.processor, kwargs.get("chat_template")) if vision \
            else tokenizer.get_chat_template(kwargs.get("chat_template"), tools=None)
    except ValueError as e:
        raise SourceError(f"module {spec.name!r} takes chat messages but has no usable chat template: {e}") from None
    variables: dict[str, str | bool | int | float] = {
        key: value for key, value in tokenizer.special_tokens_map.items() if isinstance(value, str)}
    variables |= {key: value for key, value in kwargs.items()
                  if key not in CHAT_SIZE_KEYS | CHAT_OPTIONS | set(CHAT_REFUSED)}
    if "add_generation_prompt" in kwargs:
        variables["add_generation_prompt"] = bool(kwargs["add_generation_prompt"])
    chat = ChatSpec(template=TEMPLATE_FILE, message_format=MessageFormat(module.input_formatter.message_format),
                    variables=variables, task_variable=chat_template_declares_task(module),
                    restore_suffix=bool(kwargs.get("restore_suffix", True)), special_tokens=vision)
    return chat, source


def _processor_template(processor: Any, name: str | None) -> str:
    """The template a processor's apply_chat_template renders: the named one, or its only or
    "default" one (transformers' ProcessorMixin resolves it so)."""
    templates = processor.chat_template
    if isinstance(templates, dict):
        chosen = templates.get(name or "default")
        if chosen is None:
            raise ValueError(f"no chat template named {name or 'default'!r}; it has {sorted(templates)}")
        return str(chosen)
    if name is not None:
        return name  # a template string
    if not isinstance(templates, str):
        raise ValueError("the processor has no chat template")
    return templates


def _is_tokenizer_processor(module: Any) -> bool:
    return getattr(module, "processor", None) is getattr(module, "tokenizer", None)

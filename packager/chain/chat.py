"""A message-modality Transformer's chat template and everything its render depends on, resolved
from the loaded module into the manifest (``ChatSpec``) and a template file for the artifact."""

from __future__ import annotations

from typing import Any

from packager.chain.processing import CHAT_OPTIONS, CHAT_REFUSED, CHAT_SIZE_KEYS
from packager.chain.spec import ModuleSpec
from packager.errors import SourceError, UnsupportedModuleError
from packager.runtime.manifest import ChatSpec, MessageFormat

TEMPLATE_FILE = "chat_template.jinja"  # renamed per route by the build when routes differ


def takes_messages(spec: ModuleSpec) -> bool:
    """Whether sentence-transformers turns this module's texts into chat messages."""
    return "message" in (spec.config.get("modality_config") or {})


def resolve_chat(spec: ModuleSpec, module: Any) -> tuple[ChatSpec, str] | None:
    """The chat settings and template source of a message-modality Transformer; None for others."""
    if not takes_messages(spec):
        return None
    tokenizer: Any = getattr(module, "tokenizer", None)
    if tokenizer is None or not _is_tokenizer_processor(module):
        raise UnsupportedModuleError(f"module {spec.name!r}: its processor ({type(module.processor).__name__}) is "
                                     "not a tokenizer; only text-only chat templates are compiled")
    kwargs = dict((getattr(module, "processing_kwargs", None) or {}).get("chat_template") or {})
    try:
        source = tokenizer.get_chat_template(kwargs.get("chat_template"), tools=None)
    except ValueError as e:
        raise SourceError(f"module {spec.name!r} takes chat messages but has no usable chat template: {e}") from None
    variables: dict[str, str | bool | int | float] = {
        key: value for key, value in tokenizer.special_tokens_map.items() if isinstance(value, str)}
    variables |= {key: value for key, value in kwargs.items()
                  if key not in CHAT_SIZE_KEYS | CHAT_OPTIONS | set(CHAT_REFUSED)}
    if "add_generation_prompt" in kwargs:
        variables["add_generation_prompt"] = bool(kwargs["add_generation_prompt"])
    chat = ChatSpec(template=TEMPLATE_FILE, message_format=MessageFormat(module.input_formatter.message_format),
                    variables=variables, task_variable=bool(module._chat_template_declares_task()),
                    restore_suffix=bool(kwargs.get("restore_suffix", True)))
    return chat, source


def _is_tokenizer_processor(module: Any) -> bool:
    return getattr(module, "processor", None) is getattr(module, "tokenizer", None)

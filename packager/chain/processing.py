"""What sentence-transformers' Transformer.preprocess does for each verb, resolved into the
manifest: the truncation length a task gets (``query_length``, ``document_length``, a
``processing_kwargs`` max_length, a chat template's own), and ColBERT-style query expansion.

``processing_kwargs`` are checked before anything is loaded: what the runtime reproduces is
compiled; anything else is refused, naming the key and why.
"""

from __future__ import annotations

from typing import Any

from packager.errors import UnsupportedModuleError
from packager.runtime.enums import ExpansionStrategy
from packager.runtime.routes import INT32_LIMIT, ExpansionSpec, VerbSpec

# Text call settings the runtime reproduces. Padding and pad_to_multiple_of change how wide a
# batch is, never a text's result where the graph reads the attention mask (padding="max_length"
# is compiled as a fixed width, for the towers that read a fixed position; see
# chain.tokenizer._check_padding_invariance); logits_to_keep is a
# constant of the graph (LogitScore reads the last position either way).
_TEXT_KEYS = frozenset({"max_length", "truncation", "padding", "pad_to_multiple_of", "logits_to_keep",
                        "add_special_tokens", "return_tensors"})
_TRUNCATING = (True, "longest_first")  # what the runtime's truncation is
# Settings for other modalities never reach a text route's inputs (an image route's are refused:
# they would change the image processor's settings the manifest records).
_OTHER_MODALITIES = ("image", "audio", "video")
# apply_chat_template arguments that are not template variables: the size settings (the text
# settings above), the template itself, and what changes the rendered conversation.
CHAT_SIZE_KEYS = frozenset({"padding", "truncation", "max_length", "return_tensors"})
CHAT_OPTIONS = frozenset({"chat_template", "restore_suffix", "add_generation_prompt"})
CHAT_REFUSED = ("tools", "documents", "continue_final_message", "sanitize_control_tokens",
                 "return_assistant_tokens_mask", "tokenizer_kwargs", "tokenize", "return_dict")


def processing_problems(name: str, config: dict[str, Any], *, chat: bool) -> list[str]:
    """What in a Transformer's saved ``processing_kwargs`` the runtime would not reproduce."""
    kwargs = config.get("processing_kwargs") or {}
    if not isinstance(kwargs, dict) or not all(isinstance(v, dict) for v in kwargs.values()):
        return [f"module {name!r}: processing_kwargs must map modality names to objects"]
    where = f"module {name!r}: processing_kwargs"
    problems = []
    for group, settings in kwargs.items():
        if group == "image" and settings and "image" in (config.get("modality_config") or {}):
            problems.append(f"{where}['image'] {sorted(settings)} override the image processor's settings per call; "
                            "they are not compiled (save the processor with them instead)")
            continue
        if group in _OTHER_MODALITIES or not settings:
            continue
        if group == "common":
            problems.append(f"{where}['common'] {sorted(settings)} apply to every processor call and are not "
                            "compiled; put text settings under 'text'")
        elif group == "text":
            problems += _size_problems(f"{where}['text']", settings, _TEXT_KEYS)
        elif group == "chat_template" and chat:
            problems += _size_problems(f"{where}['chat_template']", settings, None)
            problems += [f"{where}['chat_template'][{key!r}] changes how conversations are rendered and is not "
                         "compiled" for key in CHAT_REFUSED if settings.get(key)]
            problems += [f"{where}['chat_template'][{key!r}]: only strings, numbers and booleans are compiled as "
                         f"template variables, got {type(value).__name__}" for key, value in settings.items()
                         if key not in CHAT_SIZE_KEYS | CHAT_OPTIONS | set(CHAT_REFUSED)
                         and not isinstance(value, (str, int, float, bool))]
        elif group != "chat_template":
            problems.append(f"{where}[{group!r}] is not a processor group sentence-transformers knows")
    return problems


def _size_problems(where: str, settings: dict[str, Any], known: frozenset[str] | None) -> list[str]:
    problems = [f"{where}[{key!r}] is not reproduced by the runtime" for key in settings
                if known is not None and key not in known]
    length = settings.get("max_length")
    if "max_length" in settings and not (type(length) is int and 1 <= length <= INT32_LIMIT):
        problems.append(f"{where}['max_length'] must be a positive integer, got {length!r}")
    if "truncation" in settings and settings["truncation"] not in _TRUNCATING:
        problems.append(f"{where}['truncation'] = {settings['truncation']!r}: the runtime truncates longest-first "
                        "at max_length; other strategies are not compiled")
    if settings.get("padding", True) in (False, "do_not_pad"):
        problems.append(f"{where}['padding'] = {settings['padding']!r}: batches without padding are not compiled")
    keep = settings.get("logits_to_keep", 1)
    if type(keep) is not int or keep < 0:
        problems.append(f"{where}['logits_to_keep'] must be a non-negative integer, got {keep!r}")
    return problems


def verb_spec(module: Any, *, route: str, task: str | None, chat: bool) -> VerbSpec:
    """The verb's route and task, and the truncation length and query expansion the input module
    applies for that task, exactly as Transformer.preprocess resolves them."""
    kwargs = getattr(module, "processing_kwargs", None) or {}
    text = kwargs.get("text") or {}
    lengths = {"query": getattr(module, "query_length", None), "document": getattr(module, "document_length", None)}
    task_length = lengths.get(task) if task else None
    expansion = getattr(module, "query_expansion", None) if task == "query" else None
    max_length = text.get("max_length", task_length if expansion is None else None)
    if expansion is not None:
        if expansion["strategy"] == "fixed":
            max_length = expansion["length"]
        elif task_length is not None and "max_length" not in text:
            max_length = max(task_length, expansion["length"])
    if chat:  # the chat-template settings win over the text ones
        max_length = (kwargs.get("chat_template") or {}).get("max_length", max_length)
    return VerbSpec(route=route, task=task, max_length=max_length,
                    expansion=_expansion(module, expansion) if expansion is not None else None)


def _expansion(module: Any, expansion: dict[str, Any]) -> ExpansionSpec:
    tokenizer = module.tokenizer
    token = expansion.get("token")
    if token is not None:
        token_id = tokenizer.convert_tokens_to_ids(token)
    else:  # sentence-transformers' fallback: the mask token, else the end-of-sequence token
        token_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.eos_token_id
    if token_id is None:
        raise UnsupportedModuleError(f"query_expansion token {token!r} is not in the tokenizer's vocabulary")
    return ExpansionSpec(strategy=ExpansionStrategy(expansion["strategy"]), length=int(expansion["length"]),
                         token_id=int(token_id), attend=bool(expansion.get("attend", False)))

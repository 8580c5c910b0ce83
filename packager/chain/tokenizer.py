"""The tokenizer exactly as the reference calls it, resolved into the manifest's settings and a
clean tokenizer.json: the runtime applies these and infers nothing."""

from __future__ import annotations

import json
from typing import Any

from packager.chain.spec import ModuleSpec
from packager.errors import SourceError, UnsupportedModuleError
from packager.runtime.enums import ModuleKind, Side
from packager.runtime.routes import INT32_LIMIT, TokenizerSpec, WordsSpec

# Tokenizers with no length limit (model_max_length unset) truncate at this, i.e. never.
NO_LENGTH_LIMIT = INT32_LIMIT


def resolve_tokenizer(spec: ModuleSpec, module: Any) -> tuple[TokenizerSpec, str]:
    """The tokenizer exactly as the reference calls it: its backend tokenizer (with any
    do_lower_case normalizer sentence-transformers added) and the call-time settings
    (max_seq_length, not model_max_length from the file; sides; special tokens)."""
    if spec.kind is ModuleKind.STATIC_EMBEDDING:
        return _static_tokenizer(module.tokenizer)
    if spec.kind in (ModuleKind.WORD_EMBEDDINGS, ModuleKind.BOW):
        return _word_tokenizer(spec, module)
    tokenizer: Any = getattr(module, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if tokenizer is None or backend is None:
        raise UnsupportedModuleError(f"module {spec.name!r}: its tokenizer ({type(tokenizer).__name__}) has no fast "
                                     "(tokenizers) backend; the runtime needs tokenizer.json")
    text = (getattr(module, "processing_kwargs", None) or {}).get("text") or {}
    max_length = module.max_seq_length
    if max_length is None:
        raise UnsupportedModuleError(f"module {spec.name!r} has no max_seq_length; set one in its config")
    if type(max_length) is not int or max_length < 1:
        raise SourceError(f"module {spec.name!r}: max_seq_length must be a positive integer, got {max_length!r} "
                          "(from its config or its tokenizer's model_max_length)")
    limit = _position_limit(module)
    if limit is not None and max_length > limit:
        raise SourceError(f"module {spec.name!r}: max_seq_length {max_length} exceeds the {limit} positions its model "
                          f"embeds, so longer texts would fail in the reference too; set max_seq_length <= {limit}")
    static = spec.kind is ModuleKind.SPARSE_STATIC_EMBEDDING
    padding = text.get("padding", True)
    fixed_width = str(getattr(padding, "value", padding)) == "max_length"
    _check_padding_invariance(spec, module, fixed_width=fixed_width)
    return TokenizerSpec(
        file="tokenizer.json",  # renamed per route by the build when routes differ
        max_length=min(max_length, NO_LENGTH_LIMIT),
        truncation_side=Side(tokenizer.truncation_side),
        padding_side=Side(tokenizer.padding_side),
        pad_id=int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
        pad_type_id=int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
        pad_token=str(tokenizer.pad_token or ""),
        lowercase=_lowercases(backend.normalizer),
        # SparseStaticEmbedding tokenizes without special tokens; processing_kwargs may say either way
        add_special_tokens=bool(text.get("add_special_tokens", not static)),
        special_ids=tuple(sorted(int(i) for i in tokenizer.all_special_ids)),
        pad_to_max_length=fixed_width,
    ), _without_call_settings(backend)


# Text towers that pool a fixed position (the last) whatever the attention mask says: SigLIP's
# (``pooler_output = last_hidden_state[:, -1, :]``), which it was trained to read on texts padded
# to a fixed length. Their result is a function of a text alone only with padding="max_length".
_LAST_POSITION_POOLING = frozenset({"siglip", "siglip2", "siglip_text_model", "siglip2_text_model"})


def _check_padding_invariance(spec: ModuleSpec, module: Any, *, fixed_width: bool) -> None:
    """Refuse a text tower whose result depends on how wide its batch is padded, unless every text
    is padded to one width: sentence-transformers pads each batch to its longest text, so the
    same text would embed differently in another batch (the reference itself is not a function
    of the text, and no artifact could match it)."""
    model = getattr(module, "auto_model", None) or getattr(module, "model", None)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if fixed_width or model_type not in _LAST_POSITION_POOLING:
        return
    raise UnsupportedModuleError(
        f"module {spec.name!r}: the {model_type} text tower pools the last position whatever the attention mask, "
        "so with sentence-transformers' default padding (each batch to its longest text) a text's embedding depends "
        "on the other texts in its batch, and no artifact can reproduce that. SigLIP reads texts padded to a fixed "
        "length: save the Transformer with processing_kwargs={'text': {'padding': 'max_length', 'max_length': N}} "
        "(N = its max_position_embeddings, 64 for the released SigLIP models), and it compiles")


def _static_tokenizer(tokenizer: Any) -> tuple[TokenizerSpec, str]:
    """StaticEmbedding's raw tokenizers.Tokenizer, called as it calls it: no special tokens, no
    padding, and the truncation its own tokenizer.json sets (or none)."""
    truncation = tokenizer.truncation or {}
    if truncation.get("stride"):
        raise UnsupportedModuleError("StaticEmbedding's tokenizer truncates with a stride; only plain truncation is "
                                     "compiled")
    special = [i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special]
    return TokenizerSpec(
        file="tokenizer.json", max_length=int(truncation.get("max_length", NO_LENGTH_LIMIT)),
        truncation_side=Side(truncation.get("direction", "right")), padding_side=Side.RIGHT, pad_id=0, pad_type_id=0,
        pad_token="", lowercase=_lowercases(tokenizer.normalizer), add_special_tokens=False,
        special_ids=tuple(sorted(special)),
    ), _without_call_settings(tokenizer)


def _word_tokenizer(spec: ModuleSpec, module: Any) -> tuple[TokenizerSpec, str]:
    """A WordEmbeddings' or BoW's WhitespaceTokenizer, as its ``tokenize`` reads it: the vocabulary
    (word -> id, the last id of a word listed twice), stop words, do_lower_case and Python's
    punctuation; the first max_seq_length ids of a text kept (a BoW keeps all)."""
    import string

    from sentence_transformers.sentence_transformer.modules.tokenizer import WhitespaceTokenizer

    tokenizer = module.tokenizer
    if type(tokenizer) is not WhitespaceTokenizer:
        raise UnsupportedModuleError(f"module {spec.name!r}: its tokenizer is a {type(tokenizer).__name__}; a "
                                     f"{spec.kind.value} is compiled with a WhitespaceTokenizer, which the runtime "
                                     "repeats")
    max_length = getattr(module, "max_seq_length", None) if spec.kind is ModuleKind.WORD_EMBEDDINGS else None
    if max_length is not None and (type(max_length) is not int or max_length < 1):
        raise SourceError(f"module {spec.name!r}: max_seq_length must be a positive integer, got {max_length!r}")
    # Only strings can equal a text's words: other JSON values in the saved lists never match.
    vocabulary = {word: int(i) for word, i in tokenizer.word2idx.items() if isinstance(word, str)}
    words = WordsSpec(lowercase=bool(tokenizer.do_lower_case), punctuation=string.punctuation,
                      stop_words=tuple(sorted(w for w in tokenizer.stop_words if isinstance(w, str))))
    return TokenizerSpec(
        file="vocabulary.json", max_length=min(max_length or NO_LENGTH_LIMIT, NO_LENGTH_LIMIT),
        truncation_side=Side.RIGHT, padding_side=Side.RIGHT, pad_id=0, pad_type_id=0, pad_token="",
        lowercase=words.lowercase, add_special_tokens=False, special_ids=(), words=words,
    ), json.dumps(vocabulary)


def _position_limit(module: Any) -> int | None:
    """How many tokens a model with learned absolute positions takes (RoBERTa-likes count from
    the padding index + 1); None for rotary or relative positions, which have no table."""
    import torch

    model = getattr(getattr(module, "auto_model", None), "base_model", None)
    embeddings = getattr(model, "embeddings", None)
    table = getattr(embeddings, "position_embeddings", None)
    if not isinstance(table, torch.nn.Embedding):
        return None
    padding_idx = getattr(embeddings, "padding_idx", None)
    return table.num_embeddings - (padding_idx + 1 if isinstance(padding_idx, int) else 0)


def _without_call_settings(backend: Any) -> str:
    """tokenizer.json without truncation/padding sections: transformers sets those per call, so
    the saved ones are stale; the runtime applies the manifest's instead."""
    from tokenizers import Tokenizer

    clean = Tokenizer.from_str(backend.to_str())
    clean.no_truncation()
    clean.no_padding()
    return clean.to_str()


def _lowercases(normalizer: Any) -> bool:
    from tokenizers import normalizers

    if isinstance(normalizer, normalizers.Sequence):
        return any(_lowercases(normalizer[i]) for i in range(len(normalizer)))
    return isinstance(normalizer, normalizers.Lowercase) or bool(getattr(normalizer, "lowercase", False))

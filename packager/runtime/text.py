"""Texts (or text pairs) to graph inputs, exactly as the reference pipeline tokenizes them.

Truncation and padding come from the manifest, never from tokenizer.json's own (often stale)
truncation/padding sections: transformers overrides those at call time, so the file's values are
not what the reference used (fastembed #531 is this bug). A route whose texts go through a chat
template renders them first (the ``chat`` package); this module tokenizes and pads either way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .chat import SKELETON_FILLERS, ChatTemplate, TemplateFailedError, TextInput
from .enums import ExpansionStrategy, Side
from .errors import ArtifactIntegrityError, InvalidInputError, MissingDependencyError
from .files import read_text
from .memo import BoundedCache
from .routes import INT32_LIMIT, PROMPT_LENGTH, ChatSpec, ExpansionSpec, TokenizerSpec
from .words import WordTokenizer

TEMPLATE_LIMIT = 1 << 20  # a chat template file; real ones are a few kB
EXPANSION_POSITIONS = "query_expansion_positions"  # the graph input that marks query expansion tokens
# Pairs whose sides both have more tokens than max_length + this are cut before tokenizing (see
# TextEncoder.bounded_pair); a side this many times longer in characters is checked.
_MARGIN_TOKENS = 16
_CHARS_PER_TOKEN = 8
# Caches an encoder keeps across calls: tokenizers truncating at each length a verb uses (the
# manifest's lengths, and the unbounded one the build's probes count with), and the chat template's
# tail per conversation shape, whose key holds the caller's prompt (a system message).
TRUNCATING_CACHE = 8
SUFFIX_CACHE = 64
SUFFIX_KEY_CHARS = 4096


class Tokens(NamedTuple):
    """One input's token ids (and segment ids), truncated, not padded."""

    ids: list[int]
    type_ids: list[int]


def _has_images(conversation: list[dict[str, Any]]) -> bool:
    return any(isinstance(m["content"], list) and any(p.get("type") != "text" for p in m["content"])
               for m in conversation)


def load_tokenizer(root: Path, spec: TokenizerSpec) -> Any:
    """The artifact's tokenizer file, with no padding or truncation of its own: a word
    tokenizer's vocabulary (``spec.words``) or a tokenizers file."""
    if spec.words is not None:
        return WordTokenizer.open(root, spec)
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise MissingDependencyError("the loader needs the tokenizers package: pip install tokenizers") from e
    try:
        tokenizer = Tokenizer.from_file(str(root / spec.file))
        tokenizer.no_padding()
        tokenizer.no_truncation()
    except Exception as e:  # tokenizers raises a bare Exception for every file it cannot read
        raise ArtifactIntegrityError(f"{spec.file}: not a tokenizer the tokenizers library can read "
                                     f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
    return tokenizer


class TextEncoder:
    """Tokenizes batches of texts or pairs (through the route's chat template, if it has one) and
    pads them into the graph's int64 inputs."""

    def __init__(self, tokenizer: Any, spec: TokenizerSpec, input_names: tuple[str, ...],
                 chat: ChatTemplate | None = None) -> None:
        self._tokenizer = tokenizer
        self.spec = spec
        self._input_names = input_names
        self.chat = chat
        self._truncating: BoundedCache[Any] = BoundedCache(TRUNCATING_CACHE)
        self._suffixes: BoundedCache[list[int]] = BoundedCache(SUFFIX_CACHE)

    @property
    def tokenizer(self) -> Any:
        """The tokenizer, without truncation: a tokenizers.Tokenizer or a ``WordTokenizer``."""
        return self._tokenizer

    @classmethod
    def open(cls, root: Path, spec: TokenizerSpec, input_names: tuple[str, ...],
             chat: ChatSpec | None = None) -> TextEncoder:
        """The encoder of one route of the artifact in ``root``."""
        template = None
        if chat is not None:
            source = read_text(root / chat.template, limit=TEMPLATE_LIMIT, error=ArtifactIntegrityError)
            template = ChatTemplate(source, chat, where=chat.template)
        return cls(load_tokenizer(root, spec), spec, input_names, template)

    def truncating(self, max_length: int) -> Any:
        """A copy of the tokenizer that truncates at ``max_length`` (longest first for pairs), one
        per length (a tokenizer's truncation is its own state, shared by every thread using it)."""
        def make() -> Any:
            if isinstance(self._tokenizer, WordTokenizer):
                return self._tokenizer.truncating(max_length)  # keeps the first words, as the reference does
            tokenizer = self._tokenizer.from_str(self._tokenizer.to_str())
            try:
                tokenizer.enable_truncation(max_length, strategy="longest_first",
                                            direction=self.spec.truncation_side.value)
            except Exception as e:
                raise ArtifactIntegrityError(f"{self.spec.file}: cannot truncate at {max_length}: {e}") from None
            return tokenizer

        return self._truncating.get(max_length, make)

    def encode(self, inputs: list[TextInput], *, max_length: int, prompt: str | None = None,
               task: str | None = None) -> tuple[list[Tokens], int]:
        """Truncated token ids per text or pair, as the reference makes them for a verb with this
        ``max_length``, ``prompt`` and ``task``, and the prompt's length in tokens when the graph
        pools without it (else 0). Plain routes prepend the prompt to each text (to a pair's
        first) and truncate pairs longest-first; chat routes render each input as a conversation
        and truncate the rendered text. An empty prompt is no prompt, as in sentence-transformers."""
        if self.chat is not None:
            return self._encode_chat(inputs, max_length=max_length, prompt=prompt, task=task), 0
        if prompt:
            inputs = [prompt + x if isinstance(x, str) else (prompt + x[0], x[1]) for x in inputs]
        inputs = [self.bounded_pair(*x, max_length=max_length) if isinstance(x, tuple) else x for x in inputs]
        encodings = self.truncating(max_length).encode_batch(inputs, add_special_tokens=self.spec.add_special_tokens)
        prompt_length = self.prompt_length(prompt) if prompt and PROMPT_LENGTH in self._input_names else 0
        return [Tokens(list(e.ids), list(e.type_ids)) for e in encodings], prompt_length

    def count(self, item: TextInput, *, prompt: str | None = None, task: str | None = None) -> int:
        """Tokens one input makes before truncation (what the parity probes are sized by)."""
        return len(self.encode([item], max_length=INT32_LIMIT, prompt=prompt, task=task)[0][0].ids)

    def _encode_chat(self, inputs: list[TextInput], *, max_length: int, prompt: str | None,
                     task: str | None) -> list[Tokens]:
        chat = self.chat
        assert chat is not None
        return self.encode_conversations([chat.conversation(x, prompt) for x in inputs], max_length=max_length,
                                         task=task)

    def encode_conversations(self, conversations: list[list[dict[str, Any]]], *, max_length: int, task: str | None,
                             expand: Callable[[int, str], str] | None = None) -> list[Tokens]:
        """Rendered conversations, tokenized and truncated; a truncated one gets the template's tail
        written back over its last tokens (sentence-transformers' restore_suffix), so the position a
        scorer reads is the template's last token again. The template writes the special tokens, as
        a tokenizer's apply_chat_template does; a processor's (``ChatSpec.special_tokens``) adds the
        tokenizer's own unless the render starts with the bos token. ``expand`` rewrites the n-th
        render first (its image placeholders into image tokens). A conversation with images gets no
        tail back, as in sentence-transformers."""
        chat = self.chat
        assert chat is not None
        texts = [chat.render(c, task=task) for c in conversations]
        if expand is not None:
            texts = [expand(n, text) for n, text in enumerate(texts)]
        tokenizer = self.truncating(max_length)
        if chat.spec.special_tokens:
            encodings = [tokenizer.encode(text, add_special_tokens=self._special_tokens(text)) for text in texts]
        else:
            encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
        batch = [Tokens(list(e.ids), list(e.type_ids)) for e in encodings]
        if chat.spec.restore_suffix:
            suffixes: dict[Any, list[int]] = {}  # this call's, whatever the shared cache keeps
            for conversation, tokens in zip(conversations, batch, strict=True):
                if len(tokens.ids) >= max_length and not _has_images(conversation):
                    suffix = self._suffix(conversation, task, suffixes)
                    keep = min(len(suffix), len(tokens.ids))
                    if keep:
                        tokens.ids[-keep:] = suffix[-keep:]
        return batch

    def _special_tokens(self, text: str) -> bool:
        """Whether a render is tokenized with the tokenizer's special tokens (``ChatSpec.special_tokens``)."""
        chat = self.chat
        assert chat is not None
        bos = chat.spec.variables.get("bos_token")
        return chat.spec.special_tokens and not (isinstance(bos, str) and bos and text.startswith(bos))

    def _suffix(self, conversation: list[dict[str, Any]], task: str | None,
                suffixes: dict[Any, list[int]]) -> list[int]:
        """The template's tail for conversations shaped like this one: the common token suffix of
        two renders whose content differs, empty if they never differ. Kept per shape (roles and
        system text) for the call in ``suffixes``, and across calls in a cache of SUFFIX_CACHE
        shapes whose system text is at most SUFFIX_KEY_CHARS long: the system text is the
        caller's prompt, so neither the number nor the size of the entries may follow callers.
        Only the template's own failure (``TemplateFailedError``, as in sentence-transformers) means
        "no tail"; a skeleton the sandbox refuses or stops (a deadline hit on a busy machine, say)
        fails this call and is not cached: remembered as "no tail", it would change the output of
        every later truncated input of this shape for as long as the model is loaded."""
        key = (tuple((m["role"], str(m["content"]) if m["role"] == "system" else "") for m in conversation), task)
        if key not in suffixes:
            def tail() -> list[int]:
                return self._template_tail(conversation, task)

            kept = sum(len(system) for _, system in key[0]) <= SUFFIX_KEY_CHARS
            suffixes[key] = self._suffixes.get(key, tail) if kept else tail()
        return suffixes[key]

    def _template_tail(self, conversation: list[dict[str, Any]], task: str | None) -> list[int]:
        chat = self.chat
        assert chat is not None
        try:
            renders = [chat.render(chat.skeleton(conversation, filler), task=task) for filler in SKELETON_FILLERS]
            first, second = (self._tokenizer.encode(text, add_special_tokens=self._special_tokens(text)).ids
                             for text in renders)
        except TemplateFailedError:  # as sentence-transformers: a skeleton that fails to render restores nothing
            first = second = []
        count = 0
        for left, right in zip(reversed(first), reversed(second), strict=False):
            if left != right:
                break
            count += 1
        return list(first[len(first) - count :]) if 0 < count < min(len(first), len(second)) else []

    def bounded_pair(self, first: str, second: str, *, max_length: int) -> tuple[str, str]:
        """A pair whose sides are both long, each cut at a word start past what truncation keeps.

        tokenizers truncates a pair by combining every overflowing window of one side with every
        window of the other (tokenizers #2035): quadratic, 1.9 GB for two 5,000-token sides, more
        than 24 GB for two of 100,000. Longest-first truncation of two sides longer than the budget
        keeps half the budget of each, the odd token going to the second unless the first is longer;
        so the cut keeps every kept token and whether the first is longer, or refuses the pair."""
        keep = max_length + _MARGIN_TOKENS
        if min(len(first), len(second)) <= keep * _CHARS_PER_TOKEN:
            return first, second
        encodings = [self._tokenizer.encode(text, add_special_tokens=False) for text in (first, second)]
        lengths = [len(e.ids) for e in encodings]
        if min(lengths) <= keep:
            return first, second
        first_longer = lengths[0] > lengths[1]  # all that decides the split (a tie splits as "not longer")
        cut = [self._cut(first, encodings[0], keep + _MARGIN_TOKENS * first_longer),
               self._cut(second, encodings[1], keep + _MARGIN_TOKENS * (not first_longer))]
        kept = [text for text in cut if text is not None]
        after = [len(self._tokenizer.encode(text, add_special_tokens=False).ids) for text in kept]
        if len(kept) < 2 or min(after) <= max_length or (after[0] > after[1]) != first_longer:
            raise InvalidInputError(f"a pair of {lengths[0]} and {lengths[1]} tokens could not be shortened safely "
                                    "before truncation; shorten them (tokenizers needs memory quadratic in them)")
        return kept[0], kept[1]

    def _cut(self, text: str, encoding: Any, tokens: int) -> str | None:
        """``text`` cut at the first word start after ``tokens`` tokens from the side truncation
        keeps; None if there is no word start there (one enormous word)."""
        words, offsets = encoding.word_ids, encoding.offsets
        starts = [i for i in range(1, len(words)) if words[i] != words[i - 1]]
        if self.spec.truncation_side is Side.RIGHT:
            at = next((i for i in starts if i >= tokens), None)
            return None if at is None else text[: offsets[at][0]]
        at = next((i for i in reversed(starts) if i <= len(words) - tokens), None)
        return None if at is None else text[offsets[at][0] :]

    def prompt_length(self, prompt: str) -> int:
        """Tokens a prompt occupies at the start of a text: its own tokenization, less a trailing
        special token (as sentence-transformers measures it for include_prompt=False)."""
        spec = self.spec
        ids = self.truncating(spec.max_length).encode(prompt, add_special_tokens=spec.add_special_tokens).ids
        return len(ids) - 1 if ids and ids[-1] in self.spec.special_ids else len(ids)

    def id_to_token(self, index: int) -> str:
        return self._tokenizer.id_to_token(index) or f"[{index}]"

    def pad(self, batch: list[Tokens], *, width: int = 0, prompt_length: int = 0,
            expansion: ExpansionSpec | None = None) -> dict[str, np.ndarray]:
        """Pad one batch to its longest member (or to ``width``, if wider) on the side the
        reference pads, then, for a query with expansion, swap the padding up to the expansion
        length for the expansion token."""
        spec = self.spec
        width = max(1, width, *(len(t.ids) for t in batch))  # an all-empty batch still needs one (masked) column
        if expansion is not None:
            width = expansion.length if expansion.strategy is ExpansionStrategy.FIXED else max(width, expansion.length)
        shape = (len(batch), width)
        arrays = {
            "input_ids": np.full(shape, spec.pad_id, dtype=np.int64),
            "attention_mask": np.zeros(shape, dtype=np.int64),
            "token_type_ids": np.full(shape, spec.pad_type_id, dtype=np.int64),
            PROMPT_LENGTH: np.full(len(batch), prompt_length, dtype=np.int64),
            EXPANSION_POSITIONS: np.zeros(shape, dtype=bool),  # none, unless a query is expanded
        }
        for row, tokens in enumerate(batch):
            n = len(tokens.ids)
            cols = slice(0, n) if spec.padding_side is Side.RIGHT else slice(width - n, width)
            arrays["input_ids"][row, cols] = tokens.ids
            arrays["attention_mask"][row, cols] = 1
            arrays["token_type_ids"][row, cols] = tokens.type_ids
        if expansion is not None:
            positions = (arrays["attention_mask"] == 0) & (np.arange(width) < expansion.length)
            arrays["input_ids"][positions] = expansion.token_id
            if expansion.attend:
                arrays["attention_mask"][positions] = 1
            arrays[EXPANSION_POSITIONS] = positions
        return {name: arrays[name] for name in self._input_names}

"""Texts (or text pairs) to graph inputs, exactly as the reference pipeline tokenizes them.

Truncation and padding come from the manifest, never from tokenizer.json's own (often stale)
truncation/padding sections: transformers overrides those at call time, so the file's values are
not what the reference used (fastembed #531 is this bug).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArtifactIntegrityError, InvalidInputError, MissingDependencyError
from .manifest import PROMPT_LENGTH, Side, TokenizerSpec

TextInput = str | tuple[str, str]
# Pairs whose sides both have more tokens than max_length + this are cut before tokenizing (see
# TextEncoder.bounded_pair); a side this many times longer in characters is checked.
_MARGIN_TOKENS = 16
_CHARS_PER_TOKEN = 8


class TextEncoder:
    """Tokenizes batches of texts or pairs and pads them into the graph's int64 inputs."""

    def __init__(self, root: Path, spec: TokenizerSpec, input_names: tuple[str, ...]) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as e:
            raise MissingDependencyError("the loader needs the tokenizers package: pip install tokenizers") from e
        try:
            tokenizer = Tokenizer.from_file(str(root / spec.file))
            tokenizer.no_padding()
            tokenizer.enable_truncation(spec.max_length, strategy="longest_first",
                                        direction=spec.truncation_side.value)
        except Exception as e:  # tokenizers raises a bare Exception for every file it cannot read
            raise ArtifactIntegrityError(f"{spec.file}: not a tokenizer the tokenizers library can read "
                                         f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
        self._tokenizer = tokenizer
        self._spec = spec
        self._input_names = input_names

    def tokenize(self, inputs: list[TextInput]) -> list[Any]:
        """Truncated, unpadded encodings, one per text or pair (pairs truncated longest-first)."""
        inputs = [self.bounded_pair(*x) if isinstance(x, tuple) else x for x in inputs]
        return self._tokenizer.encode_batch(inputs, add_special_tokens=self._spec.add_special_tokens)

    @cached_property
    def _untruncated(self) -> Any:
        """The tokenizer without truncation, for long pairs only: made on first use (~20 ms for
        MiniLM's vocabulary), not at every load. Two threads may both make it; either copy serves."""
        untruncated = self._tokenizer.from_str(self._tokenizer.to_str())
        untruncated.no_truncation()
        return untruncated

    def bounded_pair(self, first: str, second: str) -> tuple[str, str]:
        """A pair whose sides are both long, each cut at a word start past what truncation keeps.

        tokenizers truncates a pair by combining every overflowing window of one side with every
        window of the other (tokenizers #2035): quadratic, 1.9 GB for two 5,000-token sides, more
        than 24 GB for two of 100,000. Longest-first truncation of two sides longer than the budget
        keeps half the budget of each, the odd token going to the second unless the first is longer;
        so the cut keeps every kept token and whether the first is longer, or refuses the pair."""
        keep = self._spec.max_length + _MARGIN_TOKENS
        if min(len(first), len(second)) <= keep * _CHARS_PER_TOKEN:
            return first, second
        encodings = [self._untruncated.encode(text, add_special_tokens=False) for text in (first, second)]
        lengths = [len(e.ids) for e in encodings]
        if min(lengths) <= keep:
            return first, second
        first_longer = lengths[0] > lengths[1]  # all that decides the split (a tie splits as "not longer")
        cut = [self._cut(first, encodings[0], keep + _MARGIN_TOKENS * first_longer),
               self._cut(second, encodings[1], keep + _MARGIN_TOKENS * (not first_longer))]
        kept = [text for text in cut if text is not None]
        after = [len(self._untruncated.encode(text, add_special_tokens=False).ids) for text in kept]
        if len(kept) < 2 or min(after) <= self._spec.max_length or (after[0] > after[1]) != first_longer:
            raise InvalidInputError(f"a pair of {lengths[0]} and {lengths[1]} tokens could not be shortened safely "
                                    "before truncation; shorten them (tokenizers needs memory quadratic in them)")
        return kept[0], kept[1]

    def _cut(self, text: str, encoding: Any, tokens: int) -> str | None:
        """``text`` cut at the first word start after ``tokens`` tokens from the side truncation
        keeps; None if there is no word start there (one enormous word)."""
        words, offsets = encoding.word_ids, encoding.offsets
        starts = [i for i in range(1, len(words)) if words[i] != words[i - 1]]
        if self._spec.truncation_side is Side.RIGHT:
            at = next((i for i in starts if i >= tokens), None)
            return None if at is None else text[: offsets[at][0]]
        at = next((i for i in reversed(starts) if i <= len(words) - tokens), None)
        return None if at is None else text[offsets[at][0] :]

    def prompt_length(self, prompt: str) -> int:
        """Tokens a prompt occupies at the start of a text: its own tokenization, less a trailing
        special token (as sentence-transformers measures it for include_prompt=False)."""
        ids = self._tokenizer.encode(prompt, add_special_tokens=self._spec.add_special_tokens).ids
        return len(ids) - 1 if ids and ids[-1] in self._spec.special_ids else len(ids)

    def id_to_token(self, index: int) -> str:
        return self._tokenizer.id_to_token(index) or f"[{index}]"

    def pad(self, encodings: list[Any], prompt_length: int = 0) -> dict[str, np.ndarray]:
        """Pad one batch to its longest member on the side the reference pads."""
        spec = self._spec
        width = max(1, *(len(e.ids) for e in encodings))  # an all-empty batch still needs one (masked) column
        shape = (len(encodings), width)
        arrays = {
            "input_ids": np.full(shape, spec.pad_id, dtype=np.int64),
            "attention_mask": np.zeros(shape, dtype=np.int64),
            "token_type_ids": np.full(shape, spec.pad_type_id, dtype=np.int64),
            PROMPT_LENGTH: np.full(len(encodings), prompt_length, dtype=np.int64),
        }
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            cols = slice(0, n) if spec.padding_side is Side.RIGHT else slice(width - n, width)
            arrays["input_ids"][row, cols] = encoding.ids
            arrays["attention_mask"][row, cols] = 1
            arrays["token_type_ids"][row, cols] = encoding.type_ids
        return {name: arrays[name] for name in self._input_names}

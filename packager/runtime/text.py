"""Texts (or text pairs) to graph inputs, exactly as the reference pipeline tokenizes them.

Truncation and padding come from the manifest, never from tokenizer.json's own (often stale)
truncation/padding sections: transformers overrides those at call time, so the file's values are
not what the reference used (fastembed #531 is this bug).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import MissingDependencyError
from .manifest import Side, TokenizerSpec

TextInput = str | tuple[str, str]


class TextEncoder:
    """Tokenizes batches of texts or pairs and pads them into the graph's int64 inputs."""

    def __init__(self, root: Path, spec: TokenizerSpec, input_names: tuple[str, ...]) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as e:
            raise MissingDependencyError("the loader needs the tokenizers package: pip install tokenizers") from e
        tokenizer = Tokenizer.from_file(str(root / spec.file))
        tokenizer.no_padding()
        tokenizer.enable_truncation(spec.max_length, strategy="longest_first", direction=spec.truncation_side.value)
        self._tokenizer = tokenizer
        self._spec = spec
        self._input_names = input_names

    def tokenize(self, inputs: list[TextInput]) -> list[Any]:
        """Truncated, unpadded encodings, one per text or pair (pairs truncated longest-first)."""
        return self._tokenizer.encode_batch(inputs, add_special_tokens=self._spec.add_special_tokens)

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
            "prompt_length": np.full(len(encodings), prompt_length, dtype=np.int64),
        }
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            cols = slice(0, n) if spec.padding_side is Side.RIGHT else slice(width - n, width)
            arrays["input_ids"][row, cols] = encoding.ids
            arrays["attention_mask"][row, cols] = 1
            arrays["token_type_ids"][row, cols] = encoding.type_ids
        return {name: arrays[name] for name in self._input_names}

"""One route of an artifact: its tokenizer and its graph session, run in length-sorted batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .backends import open_session
from .manifest import Format, OutputMeaning, RouteSpec
from .text import TextEncoder, TextInput


class RouteRunner:
    """Stateless between calls, so one runner can serve many threads."""

    def __init__(self, root: Path, fmt: Format, spec: RouteSpec, *, threads: int | None = None) -> None:
        self.spec = spec
        self.text = TextEncoder(root, spec.tokenizer, spec.inputs)
        self._session = open_session(root, fmt, spec, threads=threads)

    def has(self, meaning: OutputMeaning) -> bool:
        return self.spec.output(meaning) is not None

    def run(self, inputs: list[TextInput], meaning: OutputMeaning, *, batch_size: int,
            prompt_length: int = 0) -> list[np.ndarray]:
        """One output row per input, in input order. Everything is tokenized once, then batched by
        token length so each batch pads little; token embeddings are trimmed of trailing padding."""
        name = self.spec.output(meaning).name
        encodings = self.text.tokenize(inputs)
        order = sorted(range(len(inputs)), key=lambda i: -len(encodings[i].ids))
        rows: list[np.ndarray] = [None] * len(inputs)  # type: ignore[list-item]
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            feeds = self.text.pad([encodings[i] for i in batch], prompt_length)
            values = self._session.run(feeds)[name]
            for position, row in enumerate(batch):
                rows[row] = values[position]
                if meaning is OutputMeaning.TOKEN_EMBEDDINGS:
                    rows[row] = _trim(values[position], feeds["attention_mask"][position])
        return rows


def _trim(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Drop trailing padding, as sentence-transformers does for token embeddings."""
    last = int(np.flatnonzero(mask)[-1]) if mask.any() else 0
    return values[: last + 1]

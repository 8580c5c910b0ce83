"""One route of an artifact: its tokenizer (or image pipeline) and its graph session, run in
batches (texts sorted by length)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .backends import Compute, open_session
from .batching import MAX_BATCH_IMAGES, batches
from .chat import TextInput
from .enums import Format, OutputMeaning, Side
from .image_inputs import ImagePipeline
from .messages import conversation
from .routes import PIXEL_VALUES, RouteSpec, VerbSpec
from .text import TextEncoder
from .vision_route import VisionEncoder


class RouteRunner:
    """Stateless between calls, so one runner can serve many threads."""

    def __init__(self, root: Path, fmt: Format, spec: RouteSpec, *, threads: int | None = None,
                 compute: Compute) -> None:
        self.spec = spec
        token_inputs = ("input_ids", "attention_mask") if spec.vision else spec.inputs
        self._text = TextEncoder.open(root, spec.tokenizer, token_inputs, spec.chat) if spec.tokenizer else None
        self.images = ImagePipeline(spec.image) if spec.image else None
        self.vision = VisionEncoder(self.text, self.images, spec.vision) if spec.vision and self.images else None
        self._session = open_session(root, fmt, spec, threads=threads, compute=compute)
        # Extra padding on the right is masked by the attention mask and leaves every real token's
        # position as it was; on the left it would move a left-padded decoder's positions (not a
        # vision-language route's, which are inputs: run_messages buckets whatever the side).
        self._bucketed = (self._session.compiles_per_shape and self._text is not None
                          and self._text.spec.padding_side is Side.RIGHT and "attention_mask" in spec.inputs)

    @property
    def text(self) -> TextEncoder:
        """The tokenizer of a text route."""
        if self._text is None:
            raise ValueError(f"route {self.spec.name!r} takes images, not texts")
        return self._text

    def has(self, meaning: OutputMeaning) -> bool:
        return self.spec.output(meaning) is not None

    def run(self, inputs: list[TextInput], meaning: OutputMeaning, *, batch_size: int, verb: VerbSpec,
            prompt: str | None) -> list[np.ndarray]:
        """One output row per input, in input order, as ``verb`` runs them with ``prompt``.
        Everything is tokenized once, then batched by token length so each batch pads little;
        token embeddings are trimmed of trailing padding, or with the verb's scoring mask (a
        multi-vector encoder) reduced to the tokens it keeps."""
        output = self.spec.output(meaning)
        if output is None:  # the models check has() first
            raise ValueError(f"route {self.spec.name!r} has no {meaning.value} output")
        name = output.name
        max_length = verb.max_length or self.spec.text.max_length
        encodings, prompt_length = self.text.encode(inputs, max_length=max_length, prompt=prompt, task=verb.task)
        order = sorted(range(len(inputs)), key=lambda i: -len(encodings[i].ids))
        rows: list[np.ndarray] = [None] * len(inputs)  # type: ignore[list-item]
        lengths = [len(e.ids) for e in encodings]
        bucket_limit = max_length if self._bucketed else None
        fixed = self.text.spec.pad_to_max_length  # padding="max_length": one width for every batch
        for batch, width, size in batches(order, lengths, batch_size, bucket_limit=bucket_limit):
            width = max_length if fixed else width
            members = [encodings[i] for i in batch]
            members += members[-1:] * (size - len(batch))  # filler rows, dropped below
            feeds = self.text.pad(members, width=width, prompt_length=prompt_length, expansion=verb.expansion)
            outputs = self._session.run(feeds)
            values = outputs[name]
            for position, row in enumerate(batch):
                rows[row] = values[position]
                if verb.scoring_mask is not None:
                    rows[row] = values[position][outputs[verb.scoring_mask][position].astype(bool)]
                elif meaning is OutputMeaning.TOKEN_EMBEDDINGS:
                    rows[row] = _trim(values[position], feeds["attention_mask"][position])
        return rows

    def run_messages(self, items: list[Any], meaning: OutputMeaning, *, batch_size: int, verb: VerbSpec,
                     prompt: str | None, fetch_urls: bool = False, strings: bool = True) -> list[np.ndarray]:
        """A vision-language route's output rows, one per input (``messages``; ``strings`` as there),
        in input order: every input is checked first, then decoded and run a chunk at a time
        (``vision_route``)."""
        output = self.spec.output(meaning)
        if self.vision is None or output is None:
            raise ValueError(f"route {self.spec.name!r} has no {meaning.value} output for messages")
        conversations = [conversation(item, i, prompt, strings=strings) for i, item in enumerate(items)]
        rows: list[np.ndarray] = [None] * len(items)  # type: ignore[list-item]
        for batch, feeds in self.vision.batches(conversations, batch_size=batch_size, task=verb.task,
                                                max_length=verb.max_length or self.spec.text.max_length,
                                                fetch_urls=fetch_urls, bucket=self._session.compiles_per_shape):
            values = self._session.run(feeds)[output.name]
            for position, index in enumerate(batch):
                rows[index] = values[position] if meaning is not OutputMeaning.TOKEN_EMBEDDINGS \
                    else _trim(values[position], feeds["attention_mask"][position])
        return rows

    def run_images(self, images: list[Any], meaning: OutputMeaning, *, batch_size: int, fetch_urls: bool = False,
                   positions: list[int] | None = None) -> list[np.ndarray]:
        """One output row per image, in input order, in batches of ``batch_size`` (decoded a batch
        at a time, so memory holds one batch of pixels). Errors name each image by its position
        in the caller's inputs (``positions``)."""
        at = positions or list(range(len(images)))
        output = self.spec.output(meaning)
        if self.images is None or output is None:
            raise ValueError(f"route {self.spec.name!r} has no {meaning.value} output for images")
        rows: list[np.ndarray] = []
        size = min(batch_size, MAX_BATCH_IMAGES)
        for start in range(0, len(images), size):
            pixels = [self.images.one(image, at[start + i], fetch_urls=fetch_urls)
                      for i, image in enumerate(images[start : start + size])]
            rows.extend(self._session.run({PIXEL_VALUES: np.stack(pixels)})[output.name])
        return rows


def _trim(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Drop trailing padding, as sentence-transformers does for token embeddings."""
    last = int(np.flatnonzero(mask)[-1]) if mask.any() else 0
    return values[: last + 1]

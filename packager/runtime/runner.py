"""One route of an artifact: its tokenizer (or image pipeline) and its graph session, run in
batches (texts sorted by length)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Compute, open_session
from .chat import TextInput
from .enums import Format, OutputMeaning, Side
from .image_inputs import ImagePipeline
from .messages import Conversation, conversation
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
        # position as it was; on the left it would move a left-padded decoder's positions.
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
        in input order.
        Every input is checked first; then consecutive chunks of at most ``batch_size`` inputs and
        MAX_BATCH_IMAGES images are decoded, tokenized and run in batches by token length, so
        memory holds one chunk's patches."""
        output = self.spec.output(meaning)
        if self.vision is None or output is None:
            raise ValueError(f"route {self.spec.name!r} has no {meaning.value} output for messages")
        conversations = [conversation(item, i, prompt, strings=strings) for i, item in enumerate(items)]
        max_length = verb.max_length or self.spec.text.max_length
        rows: list[np.ndarray] = [None] * len(items)  # type: ignore[list-item]
        for chunk in _chunks(conversations, batch_size):
            tokens, pixels = self.vision.encode([conversations[i] for i in chunk], chunk, max_length=max_length,
                                                task=verb.task, fetch_urls=fetch_urls)
            lengths = [len(t.ids) for t in tokens]
            order = sorted(range(len(chunk)), key=lambda i: -lengths[i])
            for batch, width, _ in batches(order, lengths, batch_size):
                padded = self.text.pad([tokens[i] for i in batch], width=width)
                values = self._session.run(self.vision.feeds(padded, [pixels[i] for i in batch]))[output.name]
                for position, i in enumerate(batch):
                    rows[chunk[i]] = values[position] if meaning is not OutputMeaning.TOKEN_EMBEDDINGS \
                        else _trim(values[position], padded["attention_mask"][position])
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


# A batch holds at most this many tokens once padded (32 texts of 8 tokens; 1 of 256): the work
# per token is the same in smaller batches, and their activations stay in cache, while
# onnxruntime's arena keeps the blocks of the largest batch it ran. Measured on
# all-MiniLM-L6-v2 (2 threads; same process, the budgets alternated, median of 3): against 1024
# tokens, 256 ran 1000 real sentences (batch_size 32) at 1.08x (fp32) / 1.03x (int8) and texts
# of 1 to 16 sentences (batch_size 64) at 1.06x / 1.20x, and the loader's peak RSS over 100 such
# calls fell from 242 to 184 MB (fp32) and from 193 to 139 MB (int8; benchmarks/bench_memory.py).
MAX_BATCH_TOKENS = 256


# An image batch holds at most this many images, whatever batch_size asks (a request cannot make
# the runtime hold thousands of images' pixels and activations at once).
MAX_BATCH_IMAGES = 32


# With a session that compiles per input shape (OpenVINO's CPU plugin keeps kernels and buffers
# for every shape it has run, about 1.4 MB each for all-MiniLM-L6-v2, and its caches' capacities
# do not bound them), a batch is padded to a bucketed width and a short batch to a bucketed row
# count, so a route runs in a few dozen shapes instead of one per (texts, length).
def bucket_width(length: int) -> int:
    """``length`` rounded up to eight steps per doubling, at least 8 tokens apart: 8, 16, ..., 64,
    80, ..., 128, 160, ..., 256, 320, ... (16 widths up to 256; less than 8 tokens of padding, or a
    quarter of the length above 64)."""
    return _round_up(length, steps=8, least=8)


def bucket_rows(count: int) -> int:
    """``count`` rounded up to four steps per doubling: 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, ...
    (less than a third of the rows are filler)."""
    return _round_up(count, steps=4, least=1)


def _round_up(n: int, *, steps: int, least: int) -> int:
    step = max(least, (1 << (n - 1).bit_length()) // steps)
    return -(-n // step) * step


def batches(order: list[int], lengths: list[int], batch_size: int, *,
            bucket_limit: int | None = None) -> Iterator[tuple[list[int], int, int]]:
    """Consecutive slices of ``order`` (longest first), each with the width to pad it to and the
    number of rows to run it as: at most ``batch_size`` inputs, and no more than MAX_BATCH_TOKENS
    tokens once padded (at least one input). Without ``bucket_limit`` a slice is padded to its
    longest input and runs as is; with it, the width is bucket_width's (not past ``bucket_limit``,
    the route's max length, unless the input already is) and a short slice runs as bucket_rows'
    rows (not past the full slice's)."""
    start = 0
    while start < len(order):
        width = lengths[order[start]]
        if bucket_limit is not None:
            width = max(width, min(bucket_width(width), bucket_limit))
        size = min(batch_size, max(1, MAX_BATCH_TOKENS // max(width, 1)))
        batch = order[start : start + size]
        rows = min(size, bucket_rows(len(batch))) if bucket_limit is not None else len(batch)
        yield batch, width, rows
        start += size


def _chunks(conversations: list[Conversation], batch_size: int) -> Iterator[list[int]]:
    """Consecutive runs of the conversations' indices, each at most ``batch_size`` of them and at
    most MAX_BATCH_IMAGES images (at least one conversation)."""
    chunk: list[int] = []
    images = 0
    for index, item in enumerate(conversations):
        if chunk and (len(chunk) == batch_size or images + len(item.images) > MAX_BATCH_IMAGES):
            yield chunk
            chunk, images = [], 0
        chunk.append(index)
        images += len(item.images)
    if chunk:
        yield chunk


def _trim(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Drop trailing padding, as sentence-transformers does for token embeddings."""
    last = int(np.flatnonzero(mask)[-1]) if mask.any() else 0
    return values[: last + 1]

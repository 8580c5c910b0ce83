"""A vision-language message route's inputs, made as its processor makes them: each input's images
patched, its conversation rendered with one placeholder per image, each placeholder expanded to
the image's tokens (one per merged patch), the text tokenized; then, per batch, the patches of its
rows' images and the positions of ``vision_inputs``.

Memory: the inputs are decoded a chunk at a time (at most ``batch_size`` inputs and about
MAX_CHUNK_PATCHES patches, at least one input), an input's images one by one until their tokens
pass the max length (then it is refused); a batch holds at most MAX_BATCH_TOKENS tokens (at least
one input), so at most four times as many patches, across which the vision tower's attention
runs (``chain.vision_graph``; the images of one input attend within the same run).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .batching import batches, bucket_rows
from .errors import InvalidInputError
from .image_inputs import ImagePipeline
from .messages import Conversation
from .routes import VisionSpec
from .text import TextEncoder, Tokens
from .vision_inputs import vision_feeds

Patches = tuple[np.ndarray, np.ndarray]  # one input's patch rows and its images' grids
# Patches decoded before a chunk of inputs runs: 65,536 rows of Qwen2-VL's 1,176 values, 308 MB.
MAX_CHUNK_PATCHES = 1 << 16


class VisionEncoder:
    """Stateless between calls, as the route's ``TextEncoder`` and ``ImagePipeline`` are."""

    def __init__(self, text: TextEncoder, images: ImagePipeline, spec: VisionSpec) -> None:
        self.text = text
        self.images = images
        self.spec = spec
        self._token = text.id_to_token(spec.image_token_id)

    def batches(self, conversations: list[Conversation], *, batch_size: int, max_length: int, task: str | None,
                fetch_urls: bool = False, bucket: bool = False,
                max_tokens: int | None = None) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
        """The graph's inputs batch by batch, each with the conversations its rows hold (indices
        into ``conversations``, which errors name as items), within ``max_tokens`` (the runtime's
        budget by default). With ``bucket`` (a session that compiles per input shape) the widths,
        row counts and patch counts are bucketed: a route whose positions are inputs can be padded
        on either side."""
        for chunk, pixels in self._chunks(conversations, batch_size, max_length, fetch_urls):
            tokens = self._tokens([conversations[i] for i in chunk], chunk, pixels, max_length=max_length, task=task)
            lengths = [len(t.ids) for t in tokens]
            order = sorted(range(len(chunk)), key=lambda i: -lengths[i])
            for batch, width, size in batches(order, lengths, batch_size, bucket_limit=max_length if bucket else None,
                                              max_tokens=max_tokens):
                members = batch + batch[-1:] * (size - len(batch))  # filler rows, dropped by the caller
                padded = self.text.pad([tokens[i] for i in members], width=width)
                yield [chunk[i] for i in batch], self._feeds(padded, [pixels[i] for i in members], bucket=bucket)

    def _chunks(self, conversations: list[Conversation], batch_size: int, max_length: int,
                fetch_urls: bool) -> Iterator[tuple[list[int], list[Patches]]]:
        chunk: list[int] = []
        pixels: list[Patches] = []
        patches = 0
        for index, item in enumerate(conversations):
            pixels.append(self._patches(item, index, max_length, fetch_urls))
            chunk.append(index)
            patches += len(pixels[-1][0])
            if len(chunk) == batch_size or patches >= MAX_CHUNK_PATCHES:
                yield chunk, pixels
                chunk, pixels, patches = [], [], 0
        if chunk:
            yield chunk, pixels

    def _patches(self, item: Conversation, index: int, max_length: int, fetch_urls: bool) -> Patches:
        """One input's patches, its images decoded one by one; refused once their tokens alone pass
        ``max_length`` (sentence-transformers fails on such an input too)."""
        empty, no_grid = self.images.patches([])  # the pipeline's own shapes for no image
        rows, grids, tokens = [empty], [no_grid], 0
        for number, image in enumerate(item.images):
            found, grid = self.images.patches([image], fetch_urls=fetch_urls, where=f"item {index}, image",
                                              start=number)
            tokens += int(grid.prod(-1).sum()) // self.spec.merge_size**2
            if tokens > max_length:
                raise InvalidInputError(f"item {index}: its images take more than the route's max length of "
                                        f"{max_length} tokens (sentence-transformers fails on it too); use smaller "
                                        "images or fewer")
            rows.append(found)
            grids.append(grid)
        return np.concatenate(rows), np.concatenate(grids)

    def _tokens(self, conversations: list[Conversation], positions: list[int], pixels: list[Patches], *,
                max_length: int, task: str | None) -> list[Tokens]:
        """Each conversation's token ids, its placeholders expanded, truncated at ``max_length``."""
        counts = [(grid.prod(-1) // self.spec.merge_size**2).tolist() for _, grid in pixels]

        def expand(n: int, text: str) -> str:
            pieces = text.split(self._token)
            if len(pieces) - 1 != len(counts[n]):
                raise InvalidInputError(f"item {positions[n]}: {len(pieces) - 1} image placeholders "
                                        f"({self._token}) in its render for {len(counts[n])} images: its text holds "
                                        "the placeholder itself, or the chat template writes it otherwise")
            return pieces[0] + "".join(self._token * count + piece for count, piece in zip(counts[n], pieces[1:],
                                                                                          strict=True))

        tokens = self.text.encode_conversations([c.messages for c in conversations], max_length=max_length, task=task,
                                                expand=expand)
        for n, found in enumerate(tokens):
            kept = found.ids.count(self.spec.image_token_id)
            if kept != sum(counts[n]):
                raise InvalidInputError(f"item {positions[n]}: its images take {sum(counts[n])} tokens and the "
                                        f"route's max length of {max_length} tokens keeps {kept} of them "
                                        "(sentence-transformers fails on it too); use smaller images or fewer")
        return tokens

    def _feeds(self, padded: dict[str, np.ndarray], pixels: list[Patches], *, bucket: bool) -> dict[str, np.ndarray]:
        """The graph's inputs for one padded batch whose rows' images are ``pixels``; with ``bucket``,
        its patches padded with a blank image to a bucketed count of merge blocks."""
        rows, grid = (np.concatenate(parts) for parts in zip(*pixels, strict=True))
        block = self.spec.merge_size**2
        blocks = len(rows) // block
        blank = (bucket_rows(max(blocks, 1)) - blocks) * block if bucket else 0
        return vision_feeds(self.spec, padded["input_ids"], padded["attention_mask"], rows, grid, blank=blank)

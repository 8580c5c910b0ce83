"""A vision-language message route's inputs, made as its processor makes them: each input's images
patched, its conversation rendered with one placeholder per image, each placeholder expanded to
the image's tokens (one per merged patch), the text tokenized; then, per batch, the patches of its
rows' images and the positions of ``vision_inputs``."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidInputError
from .image_inputs import ImagePipeline
from .messages import Conversation
from .routes import VisionSpec
from .text import TextEncoder, Tokens
from .vision_inputs import vision_feeds

Patches = tuple[np.ndarray, np.ndarray]  # one input's patch rows and its images' grids


class VisionEncoder:
    """Stateless between calls, as the route's ``TextEncoder`` and ``ImagePipeline`` are."""

    def __init__(self, text: TextEncoder, images: ImagePipeline, spec: VisionSpec) -> None:
        self.text = text
        self.images = images
        self.spec = spec
        self._token = text.id_to_token(spec.image_token_id)

    def encode(self, conversations: list[Conversation], positions: list[int], *, max_length: int, task: str | None,
               fetch_urls: bool = False) -> tuple[list[Tokens], list[Patches]]:
        """Each conversation's truncated token ids and its images' patches; ``positions`` are the
        conversations' places among the caller's inputs, which errors name."""
        pixels = [self._patches(c.images, at, fetch_urls) for c, at in zip(conversations, positions, strict=True)]
        counts = [(grid.prod(-1) // self.spec.merge_size**2).tolist() for _, grid in pixels]

        def expand(n: int, text: str) -> str:
            pieces = text.split(self._token)
            if len(pieces) - 1 != len(counts[n]):
                raise InvalidInputError(f"item {positions[n]}: the chat template wrote {len(pieces) - 1} image "
                                        f"placeholders for {len(counts[n])} images")
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
        return tokens, pixels

    def feeds(self, padded: dict[str, np.ndarray], pixels: list[Patches]) -> dict[str, np.ndarray]:
        """The graph's inputs for one padded batch whose rows' images are ``pixels``."""
        rows, grid = (np.concatenate(parts) for parts in zip(*pixels, strict=True))
        return vision_feeds(self.spec, padded["input_ids"], padded["attention_mask"], rows, grid)

    def _patches(self, images: list[Any], at: int, fetch_urls: bool) -> Patches:
        return self.images.patches(images, fetch_urls=fetch_urls, where=f"item {at}, image")

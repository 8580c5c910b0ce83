"""The positions a Qwen-VL graph takes beside its token ids and patches, computed in numpy as the
model computes them in Python, so the graph has no loop over images:

- ``image_segments``: each patch row's image, so the vision tower attends within one image;
- ``patch_positions``: each patch row's (row, column) in its image's patch grid, in the patches'
  merge-block order, for the vision tower's rotary embedding;
- ``rope_positions``: the language model's multimodal rotary positions (M-RoPE, three axes).
  Text tokens count up on all three axes; an image's tokens take (start, start + row,
  start + column) over its merged grid, and the text after it starts at start plus the merged
  grid's longer side. Padding is position 0.

Images only: a video's temporal positions need its frame timing, which the runtime does not take.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidInputError


def image_segments(grid: np.ndarray) -> np.ndarray:
    """``[sum of t * h * w]`` int64: the index of the image each patch row belongs to."""
    return np.repeat(np.arange(len(grid), dtype=np.int64), grid.prod(-1))


def patch_positions(grid: np.ndarray, merge: int) -> np.ndarray:
    """``[sum of t * h * w, 2]`` int64: each patch row's (row, column), merge block by merge block."""
    positions = [np.zeros((0, 2), np.int64)]
    for frames, height, width in grid.tolist():
        rows, columns = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        blocks = (height // merge, merge, width // merge, merge)
        pairs = np.stack([rows.reshape(blocks).transpose(0, 2, 1, 3).ravel(),
                          columns.reshape(blocks).transpose(0, 2, 1, 3).ravel()], axis=-1)
        positions.append(np.tile(pairs, (frames, 1)))
    return np.concatenate(positions).astype(np.int64)


def rope_positions(image_tokens: np.ndarray, attention_mask: np.ndarray, grid: np.ndarray, merge: int) -> np.ndarray:
    """``[3, batch, length]`` int64 for a batch whose ``image_tokens`` (``[batch, length]`` bool)
    mark the image placeholders, one run per image of ``grid`` (in order across the batch)."""
    batch, length = image_tokens.shape
    positions = np.zeros((3, batch, length), np.int64)
    images = iter(grid.tolist())
    for row in range(batch):
        kept = np.flatnonzero(attention_mask[row])
        kinds = image_tokens[row, kept]
        if not len(kinds):
            continue
        edges = np.flatnonzero(np.diff(kinds.astype(np.int8))) + 1
        runs, start = [], 0
        for begin, end in zip(np.r_[0, edges], np.r_[edges, len(kinds)], strict=True):
            count = int(end - begin)
            if not kinds[begin]:
                runs.append(np.broadcast_to(np.arange(start, start + count), (3, count)))
                start += count
                continue
            frames, height, width = next(images, (0, 0, 0))
            height, width = height // merge, width // merge
            if frames * height * width != count:
                raise InvalidInputError(f"item {row}: {count} image tokens in a row where the next image has "
                                        f"{frames * height * width}; each image needs its own run of placeholders")
            axes = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
            runs.append(np.stack([a.ravel() for a in axes]) + start)
            start += max(height, width)
        positions[:, row, kept] = np.concatenate(runs, axis=1)
    if next(images, None) is not None:
        raise InvalidInputError(f"{len(grid)} images and fewer runs of image tokens in the batch")
    return positions

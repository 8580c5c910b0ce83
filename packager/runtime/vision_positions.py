"""The positions a Qwen-VL graph takes beside its token ids and patches, computed in numpy as the
model computes them in Python, so the graph has no loop over images:

- ``image_segments``: each patch row's frame (an image is one), so the vision tower attends within it;
- ``patch_positions``: each patch row's (row, column) in its image's patch grid, in the patches'
  merge-block order, for the vision tower's rotary embedding;
- ``rope_positions``: the language model's multimodal rotary positions (M-RoPE, three axes).
  Text tokens count up on all three axes; an image's tokens take (start, start + row,
  start + column) over its merged grid, and the text after it starts at start plus the merged
  grid's longer side. Padding is position 0. (For a batch without images the model counts
  positions from the first column, padding included, instead: the same positions shifted, which
  rotary attention cannot tell apart beyond rounding);
- ``window_order`` (Qwen2.5-VL): the order its windowed blocks see the merged patches in, window
  by window, and each patch's window in that order;
- ``patch_interpolation`` (Qwen3-VL): the taps and weights that resample its learned square table
  of patch position embeddings bilinearly (corners aligned) to each image's grid.

Images only: a video's temporal positions need its frame timing, which the runtime does not take.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidInputError


def image_segments(grid: np.ndarray) -> np.ndarray:
    """``[sum of t * h * w]`` int64: the frame (of all the images' frames, in order) each patch row
    belongs to; the vision tower attends within a frame."""
    frame_sizes = np.repeat(grid[:, 1] * grid[:, 2], grid[:, 0])
    return np.repeat(np.arange(len(frame_sizes), dtype=np.int64), frame_sizes)


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
            image = next(images, None)
            if image is None:
                raise InvalidInputError(f"row {row} of the batch: more runs of image tokens than images")
            frames, height, width = image[0], image[1] // merge, image[2] // merge
            if frames * height * width != count:
                raise InvalidInputError(f"row {row} of the batch: {count} image tokens in a row where the next image "
                                        f"has {frames * height * width}; each image needs its own run of tokens")
            axes = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
            runs.append(np.stack([a.ravel() for a in axes]) + start)
            start += max(height, width)
        positions[:, row, kept] = np.concatenate(runs, axis=1)
    if next(images, None) is not None:
        raise InvalidInputError(f"{len(grid)} images and fewer runs of image tokens in the batch")
    return positions


def window_order(grid: np.ndarray, merge: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """``[sum of t * h * w / merge**2]`` int64, the merged patches window by window (windows of
    ``window`` x ``window`` merged patches, row by row over each frame; the last row and column of
    windows may be partial), and ``[sum of t * h * w]`` int64, the window of each patch once
    reordered (the patches of a merge block stay together)."""
    order, windows, first, count = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], 0, 0
    for frames, height, width in grid.tolist():
        rows, columns = height // merge, width // merge
        index = np.arange(frames * rows * columns).reshape(frames, rows, columns)
        across, down = -(-columns // window), -(-rows // window)
        for frame in index:
            for top in range(down):
                for left in range(across):
                    cells = frame[top * window:(top + 1) * window, left * window:(left + 1) * window].ravel()
                    order.append(cells + first)
                    windows.append(np.full(len(cells) * merge * merge, count, np.int64))
                    count += 1
        first += frames * rows * columns
    return np.concatenate(order), np.concatenate(windows)


def patch_interpolation(grid: np.ndarray, side: int, merge: int) -> tuple[np.ndarray, np.ndarray]:
    """``[sum of t * h * w, 4]`` int64 rows of a ``side`` x ``side`` table and float32 weights:
    each patch's (in merge-block order) bilinear resampling with aligned corners, float32 as the
    model computes it."""
    rows, columns = patch_positions(grid, merge).T
    heights = np.repeat(grid[:, 1], grid.prod(-1))
    widths = np.repeat(grid[:, 2], grid.prod(-1))
    row_taps, row_weights = _taps(rows, heights, side)
    column_taps, column_weights = _taps(columns, widths, side)
    taps = (row_taps[:, :, None] * side + column_taps[:, None, :]).reshape(-1, 4)
    weights = (row_weights[:, :, None] * column_weights[:, None, :]).reshape(-1, 4)
    return taps, weights


def _taps(index: np.ndarray, size: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """One axis: the two nearest table rows (clamped to the table) and their linear weights."""
    source = index.astype(np.float32) * np.float32(side - 1) / np.maximum(size - 1, 1).astype(np.float32)
    floor = np.floor(source)
    offsets = np.arange(2)
    taps = np.clip(floor.astype(np.int64)[:, None] + offsets, 0, side - 1)
    weights = np.maximum(np.float32(1) - np.abs(source[:, None] - floor[:, None] - offsets.astype(np.float32)),
                         np.float32(0))
    return taps, weights

"""The graph inputs of a vision-language message route (``routes.VisionSpec``) beside the token
ids and attention mask, for one batch: the patches of its images, in the order their image
tokens appear, and the positions ``vision_positions`` computes from the images' grids and the
ids."""

from __future__ import annotations

import numpy as np

from .routes import VisionSpec
from .vision_positions import image_segments, patch_interpolation, patch_positions, rope_positions, window_order

ROPE_POSITIONS = "position_ids"  # [3, batch, sequence] int64, M-RoPE
PIXEL_PATCHES = "pixel_patches"  # [patches, channels * temporal patch size * patch size**2] float32
PATCH_POSITIONS = "patch_positions"  # [patches, 2] int64
IMAGE_SEGMENTS = "image_segments"  # [patches] int64
WINDOW_ORDER = "window_order"  # [patches / merge**2] int64 (Qwen2.5-VL)
WINDOW_IDS = "window_ids"  # [patches] int64 (Qwen2.5-VL)
INTERPOLATION_TAPS = "interpolation_taps"  # [patches, 4] int64 (Qwen3-VL)
INTERPOLATION_WEIGHTS = "interpolation_weights"  # [patches, 4] float32 (Qwen3-VL)
# Each input's dynamic axes by name: the token inputs' batch and sequence, the patches' count (and
# the merged patches', a merge block's worth fewer).
DYNAMIC_AXES: dict[str, dict[int, str]] = {
    "input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
    ROPE_POSITIONS: {1: "batch", 2: "sequence"}, PIXEL_PATCHES: {0: "patches"}, PATCH_POSITIONS: {0: "patches"},
    IMAGE_SEGMENTS: {0: "patches"}, WINDOW_ORDER: {0: "merged"}, WINDOW_IDS: {0: "patches"},
    INTERPOLATION_TAPS: {0: "patches"}, INTERPOLATION_WEIGHTS: {0: "patches"},
}


def vision_input_names(spec: VisionSpec) -> tuple[str, ...]:
    """The graph's inputs, in order."""
    names: tuple[str, ...] = ("input_ids", "attention_mask", ROPE_POSITIONS, PIXEL_PATCHES, PATCH_POSITIONS,
                              IMAGE_SEGMENTS)
    if spec.window is not None:
        names += (WINDOW_ORDER, WINDOW_IDS)
    if spec.table_side is not None:
        names += (INTERPOLATION_TAPS, INTERPOLATION_WEIGHTS)
    return names


def vision_feeds(spec: VisionSpec, ids: np.ndarray, mask: np.ndarray, patches: np.ndarray, grid: np.ndarray, *,
                 blank: int = 0) -> dict[str, np.ndarray]:
    """Every input of the graph for a batch of padded ``ids`` and ``mask`` whose images are
    ``patches`` with grids ``grid`` (``ImagePipeline.patches``), with ``blank`` patches (whole
    merge blocks) of a blank image after them, whose features no token takes: for a batch without
    images at least one block (the tower's own reshapes cannot take zero patches), and more to
    bucket the patch count for a session that compiles per shape."""
    merge = spec.merge_size
    rope = rope_positions(ids == spec.image_token_id, mask, grid, merge)
    blank = max(blank, 0 if len(grid) else merge * merge)
    if blank % (merge * merge):
        raise ValueError(f"blank patches come in whole merge blocks of {merge * merge}, not {blank}")
    if blank:
        grid = np.concatenate([grid, np.array([[1, merge, blank // merge]], np.int64)])
        patches = np.concatenate([patches, np.zeros((blank, patches.shape[1]), np.float32)])
    feeds = {"input_ids": ids, "attention_mask": mask, ROPE_POSITIONS: rope, PIXEL_PATCHES: patches,
             PATCH_POSITIONS: patch_positions(grid, merge), IMAGE_SEGMENTS: image_segments(grid)}
    if spec.window is not None:
        feeds[WINDOW_ORDER], feeds[WINDOW_IDS] = window_order(grid, merge, spec.window)
    if spec.table_side is not None:
        feeds[INTERPOLATION_TAPS], feeds[INTERPOLATION_WEIGHTS] = patch_interpolation(grid, spec.table_side, merge)
    return feeds

"""The positions a Qwen-VL graph takes, computed by the runtime in numpy, against the model's own
Python for each Qwen-VL family transformers 5 ships: the language model's M-RoPE positions, the
vision tower's patch positions and its per-image attention segments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from packager.runtime import InvalidInputError
from packager.runtime.vision_positions import image_segments, patch_positions, rope_positions

MERGE = 2
# Image grids in patches (one frame): square, wide, tall, the smallest.
GRID = np.array([[1, 4, 6], [1, 8, 2], [1, 2, 2], [1, 6, 4]], np.int64)
# Each row as runs of (text tokens, image index); rows are left-padded to one length.
ROWS = [[(5, None), (0, 0), (3, None), (0, 1), (2, None)],
        [(9, None)],
        [(1, None), (0, 2)],
        [(4, None), (0, 3), (7, None)]]


def _batch() -> tuple[np.ndarray, np.ndarray]:
    """image-token flags and attention mask, left-padded."""
    tokens_per_image = GRID.prod(-1) // MERGE**2
    rows = [np.concatenate([np.zeros(n, bool) if image is None else np.ones(tokens_per_image[image], bool)
                            for n, image in row]) for row in ROWS]
    length = max(len(r) for r in rows) + 2
    flags, mask = np.zeros((len(rows), length), bool), np.zeros((len(rows), length), np.int64)
    for i, row in enumerate(rows):
        flags[i, length - len(row):], mask[i, length - len(row):] = row, 1
    return flags, mask


def _model(family: str):
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLModel,
        Qwen2VLConfig,
        Qwen2VLModel,
        Qwen3VLConfig,
        Qwen3VLModel,
    )

    text = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8}
    vision = {"depth": 1, "hidden_size": 16, "num_heads": 2, "spatial_merge_size": MERGE, "out_hidden_size": 16}
    config = {"qwen2-vl": lambda: Qwen2VLConfig(text_config=dict(text, rope_scaling={"type": "mrope",
                                                                                    "mrope_section": [1, 1, 2]}),
                                               vision_config=dict(vision, embed_dim=16)),
              "qwen2.5-vl": lambda: Qwen2_5_VLConfig(text_config=dict(text, rope_scaling={
                  "type": "mrope", "mrope_section": [1, 1, 2]}), vision_config=dict(vision, intermediate_size=32)),
              "qwen3-vl": lambda: Qwen3VLConfig(text_config=dict(text, rope_scaling={
                  "rope_type": "default", "mrope_section": [1, 1, 2], "mrope_interleaved": True}),
                  vision_config=dict(vision, intermediate_size=32))}[family]()
    model_class = {"qwen2-vl": Qwen2VLModel, "qwen2.5-vl": Qwen2_5_VLModel, "qwen3-vl": Qwen3VLModel}[family]
    return model_class(config).eval()


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl", "qwen3-vl"])
def test_rope_positions_are_the_models_own(family):
    """Several images in one text, a text without images, an image that ends its text, left
    padding: every position of every axis equal to the model's ``get_rope_index``."""
    model = _model(family)
    flags, mask = _batch()
    ids = torch.where(torch.from_numpy(flags), 60, 7)
    want, _ = model.get_rope_index(ids, mm_token_type_ids=torch.from_numpy(flags.astype(np.int64)),
                                   image_grid_thw=torch.from_numpy(GRID), attention_mask=torch.from_numpy(mask))
    got = rope_positions(flags, mask, GRID, MERGE)
    assert got.dtype == np.int64 and got.shape == tuple(want.shape)
    np.testing.assert_array_equal(got, want.numpy())
    assert (got[1] != got[0]).any() and (got[2] != got[1]).any()  # images' rows and columns: the axes differ


def test_patch_positions_and_segments_are_the_vision_towers_own():
    from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids

    grid = torch.from_numpy(GRID)
    np.testing.assert_array_equal(patch_positions(GRID, MERGE), get_vision_position_ids(grid, MERGE).numpy())
    segments = image_segments(GRID)
    bounds = np.r_[0, np.cumsum(np.bincount(segments, minlength=len(GRID)))]
    np.testing.assert_array_equal(bounds, get_vision_cu_seqlens(grid).numpy())


def test_image_tokens_that_do_not_match_the_images_are_refused():
    """Two images with no text between them read as one run (as the model's grouping reads
    them), and that run matches neither image: refused, as the model fails on it too."""
    flags, mask = _batch()
    joined = np.array([[True] * 8 + [False]], bool)
    with pytest.raises(InvalidInputError, match="item 0: 8 image tokens"):
        rope_positions(joined, np.ones_like(joined, np.int64), GRID[[2, 2]], MERGE)
    with pytest.raises(InvalidInputError, match="5 images"):
        rope_positions(flags, mask, np.concatenate([GRID, GRID[:1]]), MERGE)


def test_qwen2_5_vl_windows_are_the_vision_towers_own():
    """Window sizes that divide the merged grid, leave a partial last window, and exceed it."""
    from transformers.vision_utils import get_vision_window_index

    from packager.runtime.vision_positions import window_order

    for window in (1, 2, 3, 8):
        order, windows = window_order(GRID, MERGE, window)
        want_order, bounds = get_vision_window_index(torch.from_numpy(GRID), spatial_merge_size=MERGE,
                                                     window_size=window * MERGE * 14, patch_size=14)
        np.testing.assert_array_equal(order, want_order.numpy(), err_msg=f"window {window}")
        np.testing.assert_array_equal(np.r_[0, np.cumsum(np.bincount(windows))], bounds.numpy(),
                                      err_msg=f"window {window}")
        assert windows.tolist() == sorted(windows.tolist())


def test_qwen3_vl_patch_interpolation_is_the_vision_towers_own():
    """Taps and float32 weights, bit for bit, for each grid against the model's own table size."""
    from transformers.vision_utils import get_vision_interpolation_indices_and_weights

    from packager.runtime.vision_positions import patch_interpolation

    for side in (4, 7, 48):
        taps, weights = patch_interpolation(GRID, side, MERGE)
        want_taps, want_weights = get_vision_interpolation_indices_and_weights(
            torch.from_numpy(GRID), num_grid_per_side=side, mode="bilinear", align_corners=True,
            spatial_merge_size=MERGE)
        np.testing.assert_array_equal(taps, want_taps.numpy(), err_msg=f"side {side}")
        assert weights.dtype == want_weights.numpy().dtype == np.float32
        np.testing.assert_array_equal(weights, want_weights.numpy(), err_msg=f"side {side}")

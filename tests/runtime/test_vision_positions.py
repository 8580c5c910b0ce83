"""The positions a Qwen-VL graph takes, computed by the runtime in numpy, against the model's own
Python for each Qwen-VL family transformers 5 ships: the language model's M-RoPE positions, the
vision tower's patch positions and its per-frame attention segments, Qwen2.5-VL's window order and
Qwen3-VL's interpolated patch positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_vl import VL_FAMILIES

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
    from tiny_vl import VL_SPECIALS, vl_config

    config, model_class = vl_config(family, 64, dict(zip(VL_SPECIALS, range(58, 64), strict=True)))
    return model_class(config).eval()


@pytest.mark.parametrize("family", VL_FAMILIES)
def test_rope_positions_are_the_models_own(family):
    """Several images in one text, a text without images, an image that ends its text, left
    padding: every position of every axis equal to the model's ``get_rope_index``."""
    model = _model(family)
    flags, mask = _batch()
    ids = torch.where(torch.from_numpy(flags), model.config.image_token_id, 7)
    want, _ = model.get_rope_index(ids, mm_token_type_ids=torch.from_numpy(flags.astype(np.int64)),
                                   image_grid_thw=torch.from_numpy(GRID), attention_mask=torch.from_numpy(mask))
    got = rope_positions(flags, mask, GRID, MERGE)
    assert got.dtype == np.int64 and got.shape == tuple(want.shape)
    np.testing.assert_array_equal(got, want.numpy())
    assert (got[1] != got[0]).any() and (got[2] != got[1]).any()  # images' rows and columns: the axes differ


def test_patch_positions_and_segments_are_the_vision_towers_own():
    """The images, and a grid of two frames (a video's shape: each frame its own segment)."""
    from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids

    frames = np.concatenate([GRID, [[2, 4, 2]]])
    grid = torch.from_numpy(frames)
    np.testing.assert_array_equal(patch_positions(frames, MERGE), get_vision_position_ids(grid, MERGE).numpy())
    bounds = get_vision_cu_seqlens(grid).numpy()
    want = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
    np.testing.assert_array_equal(image_segments(frames), want)
    assert image_segments(frames).max() == len(GRID) + 1  # the two frames are two segments


def test_image_tokens_that_do_not_match_the_images_are_refused():
    """Two one-token images with no text between them read as one run of two tokens (as the
    model's grouping reads them), which matches neither image: refused, as the model fails on it
    too. More images than runs, or more runs than images, are refused."""
    joined = np.array([[True, True, False]])
    grid = GRID[[2, 2]]  # 2 x 2 patches each: one token
    with pytest.raises(InvalidInputError, match=r"row 0 of the batch: 2 image tokens .* has 1"):
        rope_positions(joined, np.ones_like(joined, np.int64), grid, MERGE)
    with pytest.raises(RuntimeError):
        _model("qwen2-vl").get_rope_index(torch.tensor([[62, 62, 7]]), mm_token_type_ids=torch.tensor([[1, 1, 0]]),
                                          image_grid_thw=torch.from_numpy(grid),
                                          attention_mask=torch.ones(1, 3, dtype=torch.int64))
    flags, mask = _batch()
    with pytest.raises(InvalidInputError, match="5 images"):
        rope_positions(flags, mask, np.concatenate([GRID, GRID[:1]]), MERGE)
    with pytest.raises(InvalidInputError, match="more runs of image tokens than images"):
        rope_positions(flags, mask, GRID[:3], MERGE)


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

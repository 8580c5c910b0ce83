"""A vision-language batch's blank image: one merge block where the batch has no image, more to
bucket the patch count; its patches come after the real ones and no token takes their features,
so the text's positions are the same with or without it."""

from __future__ import annotations

import numpy as np
import pytest

from packager.runtime.enums import VisionFamily
from packager.runtime.routes import VisionSpec
from packager.runtime.vision_inputs import vision_feeds, vision_input_names

SPEC = VisionSpec(family=VisionFamily.QWEN2_5_VL, image_token_id=9, merge_size=2, window=2)


def _batch(images: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ids = np.array([[0, 1, 2, *([9] * 4 * images), 3]])
    grid = np.array([[1, 4, 4]] * images, np.int64).reshape(-1, 3)
    return ids, np.ones_like(ids), np.ones((16 * images, 12), np.float32), grid


@pytest.mark.parametrize("images,blank,rows", [(0, 0, 4), (0, 12, 12), (1, 0, 16), (1, 8, 24)])
def test_blank_patches_follow_the_images_and_leave_the_text_positions(images, blank, rows):
    ids, mask, patches, grid = _batch(images)
    plain = vision_feeds(SPEC, ids, mask, patches, grid)
    feeds = vision_feeds(SPEC, ids, mask, patches, grid, blank=blank)
    assert tuple(feeds) == vision_input_names(SPEC)
    assert len(feeds["pixel_patches"]) == rows == len(feeds["patch_positions"]) == len(feeds["window_ids"])
    np.testing.assert_array_equal(feeds["pixel_patches"][: len(patches)], patches)
    assert not feeds["pixel_patches"][len(patches):].any()
    np.testing.assert_array_equal(feeds["position_ids"], plain["position_ids"])
    if rows > len(patches):  # the blank image is a segment of its own, after the real ones
        assert feeds["image_segments"][-1] == images and feeds["image_segments"][len(patches)] == images
    assert len(feeds["window_order"]) == rows // 4


def test_blank_patches_come_in_whole_merge_blocks():
    with pytest.raises(ValueError, match="whole merge blocks of 4"):
        vision_feeds(SPEC, *_batch(1), blank=6)


def test_inputs_are_decoded_a_chunk_at_a_time(monkeypatch):
    """A chunk closes at batch_size inputs or once its patches reach MAX_CHUNK_PATCHES, whichever
    comes first, and holds at least one input: the decoded patches of a call stay bounded."""
    from packager.runtime import vision_route
    from packager.runtime.messages import Conversation

    monkeypatch.setattr(vision_route, "MAX_CHUNK_PATCHES", 40)
    encoder = object.__new__(vision_route.VisionEncoder)
    sizes = [16, 16, 16, 64, 0, 0, 0, 0, 8]  # patches of each input's images
    monkeypatch.setattr(encoder, "_patches", lambda item, index, *_: (np.zeros((sizes[index], 3)), None))
    conversations = [Conversation([], [])] * len(sizes)
    chunks = [chunk for chunk, _ in encoder._chunks(conversations, 3, 256, False)]
    assert chunks == [[0, 1, 2], [3], [4, 5, 6], [7, 8]]

"""The conversations a vision-language message route makes of its inputs are sentence-transformers'
own: each input kind against its InputFormatter (parse_inputs, then batch_to_message), as a Qwen-VL
Transformer configures it; and what it refuses, it refuses with the item's position."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from packager.runtime.errors import InvalidInputError
from packager.runtime.messages import RENDERED_IMAGE, as_messages, conversation
from packager.validators.image_samples import real_image_files

PHOTO, LOGO, _ = real_image_files()
# A Qwen-VL Transformer's modalities, as sentence-transformers gives them to its input formatter.
MODALITIES = ["text", "image", "video", "message"]


def _png() -> str:
    data = io.BytesIO()
    Image.new("RGB", (4, 3), (1, 2, 3)).save(data, "PNG")
    return "data:image/png;base64," + base64.b64encode(data.getvalue()).decode()


def _inputs() -> dict[str, Any]:
    photo = Image.open(PHOTO)
    array = np.zeros((5, 7, 3), np.uint8)
    return {
        "a text": "what is a compiler?",
        "a PIL image": photo,
        "an HWC uint8 array": array,
        "an image path": str(LOGO),
        "a data URI": _png(),
        "a path that is not a file (a text)": "/no/such/picture.png",
        "an audio URL (a text to a model without audio)": "https://example.com/talk.MP3?x=1",
        "text then image (dict)": {"text": "a caption", "image": photo},
        "image then text (dict)": {"image": photo, "text": "a caption"},
        "lists in a dict": {"text": ["one", "two"], "image": [photo, array]},
        "an image alone in a dict": {"image": photo},
        "one message (dict)": {"role": "user", "content": [{"type": "text", "text": "hi"},
                                                          {"type": "image", "image": photo}]},
        "messages with a system turn and string content": [
            {"role": "system", "content": "Describe pictures."},
            {"role": "user", "content": [{"type": "image", "image": str(PHOTO)}, {"type": "text", "text": "this"}]}],
    }


def _sentence_transformers(item: Any, prompt: str | None) -> tuple[list[dict], list[Any]]:
    """sentence-transformers' messages for one input, with its images taken out as the runtime's are."""
    from sentence_transformers.base.modality import InputFormatter

    formatter = InputFormatter(model_type="qwen2_vl", message_format="structured", supported_modalities=MODALITIES)
    modality, inputs, _ = formatter.parse_inputs([item])
    if modality != "message":
        modality, inputs = formatter.batch_to_message(modality, inputs)
    messages = inputs["message"]
    if prompt:
        messages = formatter.prepend_prompt_to_messages(messages, prompt)
    images: list[Any] = []
    rendered = []
    for message in messages[0]:
        content = message["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if part["type"] == "image":
                    images.append(part["image"])
                    part = RENDERED_IMAGE
                parts.append(part)
            content = parts
        rendered.append({**message, "content": content})
    return rendered, images


@pytest.mark.parametrize("prompt", [None, "Represent this: "])
@pytest.mark.parametrize("label", list(_inputs()))
def test_each_input_becomes_the_conversation_sentence_transformers_makes(label, prompt):
    item = _inputs()[label]
    want_messages, want_images = _sentence_transformers(item, prompt)
    got = conversation(item, 0, prompt)
    assert got.messages == want_messages
    assert len(got.images) == len(want_images) and all(a is b for a, b in zip(got.images, want_images, strict=True))


def test_single_inputs_and_lists_of_inputs():
    photo = Image.open(PHOTO)
    message = [{"role": "user", "content": "hi"}]
    for single in ("a text", photo, {"text": "t", "image": photo}, message, message[0]):
        assert as_messages(single) == ([single], True)
    assert as_messages(["a", photo, message]) == (["a", photo, message], False)


@pytest.mark.parametrize("item,match", [
    (b"\x89PNG...", "encoded image bytes"),
    ({"text": "t", "image": b"\x89PNG"}, "encoded image bytes"),
    ({"text": "t", "video": "clip.mp4"}, r"takes 'text' and 'image'.*\['video'\]"),
    ({}, "got keys none"),
    ([{"role": "user", "content": [{"type": "video", "video": "clip.mp4"}]}], "videos and audio are not taken"),
    ([{"role": "user", "content": [{"type": "image", "image": "x.png", "extra": 1}]}], "a part is"),
    ([{"role": "robot", "content": "hi"}], "role must be one of"),
    ([{"role": "user", "content": "hi", "name": "x"}], "a dict of 'role' and 'content'"),
    ([{"role": "user", "content": 3}], "content must be a string or a list"),
    (3.5, "expected a text, an image"),
    ({"text": ["a query", "a document"]}, "a dict of texts alone is not taken"),
    ("https://www.youtube.com/watch?v=x", "as a video"),
    ("https://example.com/clip.MKV?x=1", "as a video"),
    ({"text": "many", "image": [PHOTO] * 33}, "33 images; an input takes at most 32"),
    ({"role": "user", "content": "\ud800"}, "surrogate"),
])
def test_what_a_message_route_refuses_names_the_item(item, match):
    with pytest.raises(InvalidInputError, match=match) as caught:
        conversation(item, 4, None)
    assert str(caught.value).startswith("item 4"), caught.value


def test_for_a_service_strings_are_texts_and_image_parts_only_data_uris():
    """``strings=False`` (what the pyfunc passes for its callers): a path is a text, and a message's
    image part may not name a path or URL for the server to read; a data URI is the image itself."""
    assert conversation(str(PHOTO), 0, None, strings=False).messages == [
        {"role": "user", "content": [{"type": "text", "text": str(PHOTO)}]}]
    uri = _png()
    assert conversation({"text": "t", "image": uri}, 0, None, strings=False).images == [uri]
    for named in (str(PHOTO), "https://example.com/a.png"):
        with pytest.raises(InvalidInputError, match="image paths and URLs are not read"):
            conversation([{"role": "user", "content": [{"type": "image", "image": named}]}], 2, None, strings=False)


def test_a_video_file_is_refused_where_sentence_transformers_reads_one(tmp_path):
    """A string naming an existing .mp4 is a video to sentence-transformers, not a text; the same
    string naming no file, and an existing .wav (the model takes no audio), are texts to both."""
    from sentence_transformers.base.modality import infer_modality

    clip, sound = tmp_path / "clip.mp4", tmp_path / "sound.wav"
    for file in (clip, sound):
        file.write_bytes(b"not really media")
    assert infer_modality(str(clip), supported_modalities=MODALITIES) == "video"
    with pytest.raises(InvalidInputError, match="as a video"):
        conversation(str(clip), 0, None)
    for text in (str(tmp_path / "none.mp4"), str(sound)):
        assert infer_modality(text, supported_modalities=MODALITIES) == "text"
        assert conversation(text, 0, None).messages == [{"role": "user", "content": [{"type": "text", "text": text}]}]

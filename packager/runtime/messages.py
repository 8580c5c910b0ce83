"""The inputs of a vision-language message route as sentence-transformers turns them into chat
messages (every input of such a model becomes one conversation):

- a text is a user message with one text part;
- an image (a PIL image or an HWC uint8 array; not encoded bytes, which sentence-transformers
  refuses here) is a user message with one image part;
- a dict of ``text`` and ``image`` (each a value or a list of them) is a user message with their
  parts in the dict's order;
- a message (a dict with ``role`` and ``content``), or a list of them, is the conversation itself;
  its content is a string or a list of ``{"type": "text", "text": ...}`` and
  ``{"type": "image", "image": ...}`` parts, where an image may also be a path, a data URI or a URL.

A prompt is a leading system message. A string is an image where sentence-transformers reads it
as one (a data URI, an http(s) URL or an existing file with an image suffix), else a text; with
``strings`` False (what a service passes for its callers) every string input is a text, and an
image part's string must be a data URI: no path or URL a caller names is read. Videos and audio
are refused: the runtime takes images only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .batching import MAX_BATCH_IMAGES
from .errors import InvalidInputError
from .image_fetch import is_url, url_path
from .image_inputs import is_image
from .inputs import check_unicode

# What an image part is rendered with: the template sees the part's type and key, as it sees them in
# sentence-transformers, not the image (which no template prints).
RENDERED_IMAGE = {"type": "image", "image": "<image>"}
_ROLES = ("system", "user", "assistant", "query", "document")
_PARTS = ("text", "image")
# Strings sentence-transformers reads as a video (a URL or an existing file with these suffixes, a
# YouTube URL) for a model that takes videos, as a Qwen-VL Transformer does: refused, as the runtime
# takes none. (Audio strings are texts to it: such a model takes no audio.)
_VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".wmv", ".flv", ".mkv")
_VIDEO_HOSTS = ("www.youtube.com", "youtube.com", "youtu.be", "m.youtube.com")


@dataclass(frozen=True)
class Conversation:
    """One input's messages (image parts as ``RENDERED_IMAGE``) and its images, in order."""

    messages: list[dict[str, Any]]
    images: list[Any]


def as_messages(inputs: Any) -> tuple[list[Any], bool]:
    """The inputs of a message route, and whether a single one came in: a string, an image, a
    dict or a list of message dicts is one input; anything else iterable is a list of inputs."""
    if isinstance(inputs, (str, dict)) or is_image(inputs, strings=False) or _is_conversation(inputs):
        return [inputs], True
    if inputs is None or not isinstance(inputs, Iterable):
        raise InvalidInputError(f"expected texts, images, text+image dicts or chat messages, or a list of them, got "
                                f"{type(inputs).__name__}")
    return list(inputs), False


def conversation(item: Any, index: int, prompt: str | None, *, strings: bool = True) -> Conversation:
    """``item``'s conversation, with ``prompt`` (if any, and not empty) as a leading system message."""
    where = f"item {index}"
    _check_not_bytes(item, where)
    if is_image(item, strings=strings):
        messages, images = [{"role": "user", "content": [dict(RENDERED_IMAGE)]}], [item]
    elif isinstance(item, str):
        check_unicode(item, where)
        if strings and _is_video(item):
            raise InvalidInputError(f"{where}: sentence-transformers reads this string as a video, which the "
                                    "runtime does not take; it takes texts and images")
        messages, images = [{"role": "user", "content": [{"type": "text", "text": item}]}], []
    elif isinstance(item, dict) and "role" not in item:
        messages, images = _typed_message(item, where, strings)
    elif isinstance(item, dict) or _is_conversation(item):
        messages, images = [], []
        for number, message in enumerate([item] if isinstance(item, dict) else item):
            messages.append(_message(message, images, f"{where}, message {number}", strings))
    else:
        raise InvalidInputError(f"{where}: expected a text, an image, a dict of text and image or chat messages, got "
                                f"{type(item).__name__}")
    if len(images) > MAX_BATCH_IMAGES:
        raise InvalidInputError(f"{where}: {len(images)} images; an input takes at most {MAX_BATCH_IMAGES}")
    if prompt:
        messages = [{"role": "system", "content": [{"type": "text", "text": prompt}]}, *messages]
    return Conversation(messages, images)


def _is_conversation(item: Any) -> bool:
    return isinstance(item, list) and bool(item) and all(isinstance(m, dict) and "role" in m for m in item)


def _typed_message(item: dict[str, Any], where: str, strings: bool) -> tuple[list[dict[str, Any]], list[Any]]:
    """A dict of text and image values: one user message, parts in the dict's order."""
    unknown = sorted(str(k) for k in item if k not in _PARTS)
    if unknown or not item:
        raise InvalidInputError(f"{where}: a dict input takes 'text' and 'image' (or is a message with 'role' and "
                                f"'content'); got keys {unknown or 'none'}")
    if set(item) == {"text"} and isinstance(item["text"], (list, tuple)):
        raise InvalidInputError(f"{where}: a dict of texts alone is not taken (sentence-transformers reads two "
                                "as a query and document pair); pass each text as an input")
    parts: list[dict[str, Any]] = []
    images: list[Any] = []
    for kind, value in item.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for position, part in enumerate(values):
            parts.append(_part({"type": kind, kind: part}, images, f"{where}, {kind} {position}", strings))
    return [{"role": "user", "content": parts}], images


def _message(message: Any, images: list[Any], where: str, strings: bool) -> dict[str, Any]:
    if not isinstance(message, dict) or set(message) - {"role", "content"} or "content" not in message:
        raise InvalidInputError(f"{where}: a message is a dict of 'role' and 'content'")
    role, content = message["role"], message["content"]
    if role not in _ROLES:
        raise InvalidInputError(f"{where}: role must be one of {', '.join(_ROLES)}, got {role!r:.40}")
    if isinstance(content, str):  # rendered as it is given, as sentence-transformers does
        check_unicode(content, where)
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise InvalidInputError(f"{where}: content must be a string or a list of text and image parts")
    return {"role": role, "content": [_part(part, images, f"{where}, part {n}", strings)
                                      for n, part in enumerate(content)]}


def _part(part: Any, images: list[Any], where: str, strings: bool) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str) and set(part) == {"type", "text"}:
        check_unicode(part["text"], where)
        return {"type": "text", "text": part["text"]}
    if kind == "image" and set(part) == {"type", "image"} and part["image"] is not None:
        image = part["image"]
        _check_not_bytes(image, where)
        if isinstance(image, str) and not strings and not image.startswith("data:image/"):
            raise InvalidInputError(f"{where}: image paths and URLs are not read for this caller (image_strings="
                                    "False); send the image as a data:image/...;base64 URI")
        images.append(image)
        return dict(RENDERED_IMAGE)
    raise InvalidInputError(f"{where}: a part is {{'type': 'text', 'text': str}} or {{'type': 'image', 'image': "
                            f"image}}; videos and audio are not taken (got {str(kind)[:40]!r})")


def _check_not_bytes(item: Any, where: str) -> None:
    if isinstance(item, (bytes, bytearray, memoryview)):
        raise InvalidInputError(f"{where}: encoded image bytes are not taken by a message route (sentence-transformers "
                                "refuses them there); pass a PIL image, an array, a path or a data URI")


def _is_video(text: str) -> bool:
    """Whether sentence-transformers reads ``text`` as a video (its modality rules)."""
    if is_url(text):
        split = getattr(urlsplit, "__wrapped__", urlsplit)  # without urllib's cache, as url_path
        try:
            return url_path(text).lower().endswith(_VIDEO_SUFFIXES) or split(text).netloc in _VIDEO_HOSTS
        except ValueError:
            return False
    return text.lower().endswith(_VIDEO_SUFFIXES) and os.path.isfile(text)

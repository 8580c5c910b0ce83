"""What the verbs accept, checked as sentence-transformers would take it: a string or a list of
strings (pairs of strings for cross-encoders), valid Unicode, positive batch sizes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .errors import InvalidInputError


def as_texts(inputs: Any) -> tuple[list[str], bool]:
    """The texts, and whether a single string came in."""
    if isinstance(inputs, str):
        check_unicode(inputs, "the text")
        return [inputs], True
    if inputs is None or isinstance(inputs, (bytes, dict)) or not isinstance(inputs, Iterable):
        raise InvalidInputError(f"expected a string or a list of strings, got {type(inputs).__name__}")
    texts = list(inputs)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(f"expected strings; item {i} is {type(text).__name__}")
        check_unicode(text, f"item {i}")
    return texts, False


def as_items(inputs: Any, is_image: Any) -> tuple[list[Any], bool]:
    """Texts and images, and whether a single one came in: a string or an image (``is_image``) is
    one input, anything else iterable a list of them. Each item must be a string or an image."""
    if isinstance(inputs, str) or is_image(inputs):
        items, single = [inputs], True
    elif inputs is None or isinstance(inputs, dict) or not isinstance(inputs, Iterable):
        raise InvalidInputError(f"expected texts or images, or a list of them, got {type(inputs).__name__}")
    else:
        items, single = list(inputs), False
    for i, item in enumerate(items):
        if not isinstance(item, str) and not is_image(item):
            raise InvalidInputError(f"expected texts or images (PIL images, HWC uint8 arrays, image bytes, image "
                                    f"paths); item {i} is {type(item).__name__}")
    return items, single


def as_pairs(inputs: Any) -> tuple[list[tuple[str, str]], bool]:
    """A single (text, text) pair, or a list of them, as ``CrossEncoder.predict`` accepts; and
    whether a single pair came in."""
    if inputs is None or isinstance(inputs, (str, bytes, dict)) or not isinstance(inputs, Iterable):
        raise InvalidInputError(f"predict takes a (text, text) pair or a list of pairs, got {type(inputs).__name__}")
    items = list(inputs)
    single = bool(items) and isinstance(items[0], str)
    pairs = [items] if single else items
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(t, str) for t in pair):
            raise InvalidInputError(f"predict takes pairs of two strings; item {i} is {pair!r:.80}")
        for text in pair:
            check_unicode(text, f"item {i}")
    return [(a, b) for a, b in pairs], single


def check_unicode(text: str, where: str) -> None:
    """Lone surrogates (from bytes decoded with ``surrogateescape``) have no UTF-8 form; the
    tokenizer would fail on them with a TypeError."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InvalidInputError(f"{where} is not valid Unicode ({e.reason} at character {e.start}); "
                                    "decode its bytes with errors='replace' first") from None


def check_positive(value: Any, name: str, *, optional: bool = False) -> None:
    """``value`` is a positive integer (or None, when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")

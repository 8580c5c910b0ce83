"""Images to an image route's ``pixel_values``, in numpy and Pillow only, step by step as the
saved image processor does it (transformers' PIL backend, whose steps the manifest's
``ImageSpec`` records): decoded safely, converted to RGB, resized, center-cropped, rescaled and
normalized, channels first.

Inputs are what sentence-transformers takes for images (a PIL image, an HWC uint8 array, a local
image file path, a ``data:image/...;base64,`` URI) plus an image file's raw bytes. A file (path,
data URI, bytes) is opened as transformers' ``load_image`` opens one for sentence-transformers: its
EXIF orientation applied, then converted to RGB (transparency dropped, not composited); a PIL image
or an array goes to the processor as it is. URLs are not fetched unless the caller opts in
(``image_fetch``). Only the formats of the image suffixes below are decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import stat
from typing import Any

import numpy as np

from .errors import InvalidInputError, MissingDependencyError
from .image_fetch import fetch, is_url, url_path
from .routes import MAX_PIXELS, ImageSpec, PatchSpec

# The image file suffixes sentence-transformers reads a string ending in as an image (if it is a file).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tiff", ".webp")
# An image file is at most this large, and an image (decoded, or resized) at most MAX_PIXELS pixels:
# a larger one is refused before it is decoded.
FILE_LIMIT = 64 << 20
# The formats of those suffixes (MPO: multi-picture JPEGs, in Pillow versions that keep it apart):
# Pillow's other decoders (EPS, which runs Ghostscript, PSD, FITS...) are never reached from a
# caller's bytes.
FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "TIFF", "WEBP")


def pillow() -> Any:
    """Pillow's Image module, or a clear error: only image artifacts need it."""
    try:
        from PIL import Image
    except ImportError as e:
        raise MissingDependencyError("this artifact embeds images and needs Pillow: pip install 'pillow>=10.1'") from e
    return Image


def is_image(item: Any, *, strings: bool = True) -> bool:
    """Whether ``item`` is an image as sentence-transformers classifies inputs (a string is one if it
    is a data URI, an http(s) URL or an existing file ending in an image suffix; with ``strings``
    False a string is always a text), or raw bytes."""
    if isinstance(item, str):
        if not strings:
            return False
        if item.startswith("data:image/"):
            return True
        if is_url(item):
            try:
                return url_path(item).lower().endswith(IMAGE_SUFFIXES)
            except ValueError:
                return False
        return item.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return True
    if isinstance(item, np.ndarray):
        return item.dtype.kind not in "USO"  # an array of strings is a batch of texts
    return type(item).__module__.startswith("PIL.") and hasattr(item, "getbands")


class ImagePipeline:
    """One image route's preprocessing. Stateless, so one instance can serve many threads."""

    def __init__(self, spec: ImageSpec) -> None:
        self.spec = spec
        self._image = pillow()
        self._image.init()  # every plugin registered, so the formats below are known by name
        self._formats = tuple(f for f in FORMATS if f in self._image.OPEN)

    def pixel_values(self, images: list[Any], *, fetch_urls: bool = False) -> np.ndarray:
        """``[len(images), 3, height, width]`` float32, as the reference's processor makes them."""
        return np.stack([self.one(image, i, fetch_urls=fetch_urls) for i, image in enumerate(images)])

    def patches(self, images: list[Any], *, fetch_urls: bool = False, where: str = "item",
                start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A patched route's ``pixel_values`` ``[sum of grid_h * grid_w, channels * temporal_patch_size *
        patch_size**2]`` float32 and ``image_grid_thw`` ``[len(images), 3]`` int64 (one frame, the
        grid's height and width in patches), as the reference's processor makes them. Errors name
        the n-th image ``where`` and its number, counted from ``start``."""
        patching = self.spec.patches
        if patching is None:
            raise ValueError("this image route takes whole images (pixel_values), not patches")
        width = 3 * patching.temporal_patch_size * patching.patch_size**2
        rows, grids = [np.zeros((0, width), np.float32)], []
        for i, image in enumerate(images):
            flat, grid_h, grid_w = patchify(self.one(image, fetch_urls=fetch_urls, where=f"{where} {start + i}"),
                                            patching)
            rows.append(flat)
            grids.append((1, grid_h, grid_w))
        return np.concatenate(rows), np.array(grids, np.int64).reshape(-1, 3)

    def one(self, item: Any, index: int = 0, *, fetch_urls: bool = False, where: str | None = None) -> np.ndarray:
        where = where or f"item {index}"
        image = self._decode(item, where, fetch_urls)
        spec = self.spec
        try:
            rgb = self._rgb(image, where)
            if spec.shortest_edge is not None or spec.size is not None or spec.patches is not None:
                height, width = self._target(rgb.shape[0], rgb.shape[1], where)
                resized = self._image.fromarray(rgb).resize((width, height), resample=spec.resample)
                rgb = np.asarray(resized).reshape(height, width, -1)
        except InvalidInputError:
            raise
        except (OSError, ValueError, TypeError, SyntaxError) as e:  # a lazily loaded PIL image, an odd mode
            raise InvalidInputError(f"{where}: the image cannot be converted ({type(e).__name__}: "
                                    f"{str(e)[:200]})") from None
        if spec.crop is not None:
            rgb = center_crop(rgb, spec.crop[0], spec.crop[1])
        values: np.ndarray = rgb.astype(np.float32)
        if spec.rescale is not None:
            values = (rgb.astype(np.float64) * spec.rescale).astype(np.float32)
        if spec.mean is not None and spec.std is not None:
            values = (values - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
        return np.ascontiguousarray(values.transpose(2, 0, 1), dtype=np.float32)

    def _target(self, height: int, width: int, where: str) -> tuple[int, int]:
        """The resized (height, width): the shorter edge to ``shortest_edge`` and the longer one
        scaled and rounded down, or exactly ``size``."""
        spec = self.spec
        if spec.size is not None:
            return spec.size[0], spec.size[1]
        if spec.patches is not None:
            return smart_resize(height, width, spec.patches, where)
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = spec.shortest_edge, int(spec.shortest_edge * long / short)  # type: ignore[operator]
        if new_short * new_long > MAX_PIXELS:  # type: ignore[operator]
            raise InvalidInputError(f"{where}: {width}x{height} would be resized to {new_short}x{new_long} pixels "
                                    f"(its shorter edge to {new_short}), more than {MAX_PIXELS}; crop it first")
        return (new_long, new_short) if width <= height else (new_short, new_long)  # type: ignore[return-value]

    def _decode(self, item: Any, where: str, fetch_urls: bool) -> Any:
        """A PIL image or an HWC uint8 array."""
        if isinstance(item, np.ndarray):
            return _checked_array(item, where)
        if not isinstance(item, (str, bytes, bytearray, memoryview)):
            if not is_image(item):
                raise InvalidInputError(f"{where}: expected a PIL image, an HWC uint8 array, image bytes or an image "
                                        f"path, got {type(item).__name__}")
            _check_size(item.size, where)
            return item
        data = self._read(item, where, fetch_urls) if isinstance(item, str) else bytes(item)
        if not data:
            raise InvalidInputError(f"{where}: empty image data")
        pil = self._image
        from PIL import ImageOps

        try:
            # Pillow refuses more than twice MAX_PIXELS itself (DecompressionBombError);
            # _check_size refuses more than MAX_PIXELS from the header, before decoding.
            image = pil.open(io.BytesIO(data), formats=self._formats)
            _check_size(image.size, where)
            image.load()  # decode now: a truncated or corrupt file fails here, not later
            return ImageOps.exif_transpose(image).convert("RGB")  # as transformers' load_image
        except InvalidInputError:
            raise
        except pil.DecompressionBombError as e:
            raise InvalidInputError(f"{where}: {e}") from None
        except Exception as e:  # UnidentifiedImageError, OSError (truncated), SyntaxError, ValueError...
            raise InvalidInputError(f"{where}: not an image Pillow can decode as {', '.join(self._formats)} "
                                    f"({type(e).__name__}: {str(e)[:200]})") from None

    def _read(self, text: str, where: str, fetch_urls: bool) -> bytes:
        if text.startswith("data:image/"):
            header, _, payload = text.partition(",")
            if not header.endswith(";base64"):
                raise InvalidInputError(f"{where}: only base64 data URIs are read (data:image/...;base64,...)")
            try:
                return base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInputError(f"{where}: the data URI is not valid base64") from None
        if is_url(text):
            if not fetch_urls:
                raise InvalidInputError(f"{where}: {text[:100]!r} is a URL; the loader does not fetch URLs unless "
                                        "the caller opts in (fetch_urls=True), because a service that fetches any "
                                        "URL it is sent can be made to reach hosts it should not")
            return fetch(text, where, limit=FILE_LIMIT)
        return read_image_file(text, where)

    def _rgb(self, image: Any, where: str) -> np.ndarray:
        """HWC uint8 RGB, as the processor's ``convert_to_rgb`` makes it: a PIL image with
        transparency composited onto white, any other mode converted by Pillow; an array's
        single channel repeated, its alpha blended onto white."""
        if not isinstance(image, np.ndarray):
            if not self.spec.convert_rgb:
                image = np.asarray(image)
            elif "A" in image.getbands() or image.info.get("transparency") is not None:
                pil = self._image
                rgba = image.convert("RGBA")
                white = pil.new("RGBA", rgba.size, (255, 255, 255, 255))
                return np.asarray(pil.alpha_composite(white, rgba).convert("RGB"))
            else:
                return np.asarray(image.convert("RGB"))
        if image.ndim == 2:
            image = image[:, :, None]
        channels = image.shape[-1]
        if self.spec.convert_rgb and channels == 1:
            repeated: np.ndarray = np.repeat(image, 3, axis=-1)
            return repeated
        if self.spec.convert_rgb and channels == 4:
            alpha = image[..., 3:4] / 255
            composited: np.ndarray = np.round(alpha * image[..., :3] + (1 - alpha) * 255).astype(np.uint8)
            return composited
        if channels != 3:
            raise InvalidInputError(f"{where}: {channels} channels, and this model's image processor does not "
                                    "convert images to RGB; pass RGB images")
        rgb: np.ndarray = image
        return rgb


def smart_resize(height: int, width: int, patching: PatchSpec, where: str) -> tuple[int, int]:
    """The (height, width) a patched image is resized to: each side rounded to a multiple of the
    factor; if that has more than ``max_pixels`` pixels, both sides shrunk by one scale and
    rounded down; if fewer than ``min_pixels``, grown by one scale and rounded up."""
    if max(height, width) > 200 * min(height, width):
        raise InvalidInputError(f"{where}: a {width}x{height} image is more than 200 times as long as it is wide, "
                                "which the processor refuses; crop it first")
    factor = patching.factor
    new_height, new_width = round(height / factor) * factor, round(width / factor) * factor
    if new_height * new_width > patching.max_pixels:
        scale = math.sqrt(height * width / patching.max_pixels)
        new_height = max(factor, math.floor(height / scale / factor) * factor)
        new_width = max(factor, math.floor(width / scale / factor) * factor)
    elif new_height * new_width < patching.min_pixels:
        scale = math.sqrt(patching.min_pixels / (height * width))
        new_height = math.ceil(height * scale / factor) * factor
        new_width = math.ceil(width * scale / factor) * factor
    if new_height * new_width > MAX_PIXELS:
        raise InvalidInputError(f"{where}: {width}x{height} would be resized to {new_width}x{new_height} pixels, "
                                f"more than {MAX_PIXELS}; crop it first")
    return new_height, new_width


def patchify(values: np.ndarray, patching: PatchSpec) -> tuple[np.ndarray, int, int]:
    """A CHW image whose sides are multiples of the factor, as rows of flattened patches: merge
    block by merge block (row-major), within a block patch by patch (row-major), each patch
    channels first, repeated ``temporal_patch_size`` times, then rows and columns of pixels."""
    channels, height, width = values.shape
    size, merge, frames = patching.patch_size, patching.merge_size, patching.temporal_patch_size
    grid_h, grid_w = height // size, width // size
    blocks = values.reshape(channels, grid_h // merge, merge, size, grid_w // merge, merge, size)
    blocks = blocks.transpose(1, 4, 2, 5, 0, 3, 6)[:, :, :, :, :, None]  # a frame axis after the channels
    repeated = np.broadcast_to(blocks, (*blocks.shape[:5], frames, size, size))
    return repeated.reshape(grid_h * grid_w, channels * frames * size * size), grid_h, grid_w


def center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The processor's center crop of an HWC image: the middle ``height`` x ``width``, the image
    first zero-padded (centered, the extra pixel after) where it is smaller."""
    rows, cols = image.shape[:2]
    top, left = (rows - height) // 2, (cols - width) // 2
    if top >= 0 and left >= 0:
        return image[top : top + height, left : left + width]
    new_rows, new_cols = max(height, rows), max(width, cols)
    pad_top, pad_left = -(-(new_rows - rows) // 2), -(-(new_cols - cols) // 2)
    padded = np.zeros((new_rows, new_cols, image.shape[2]), image.dtype)
    padded[pad_top : pad_top + rows, pad_left : pad_left + cols] = image
    top, left = top + pad_top, left + pad_left
    return padded[max(0, top) : min(new_rows, top + height), max(0, left) : min(new_cols, left + width)]


def _checked_array(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise InvalidInputError(f"{where}: arrays must be HWC uint8 with 1, 3 or 4 channels, got {array.dtype} "
                                f"{list(array.shape)}")
    if array.shape[0] in (1, 3, 4):  # the processor would read it as channels first
        raise InvalidInputError(f"{where}: an array {array.shape[0]} pixels high is ambiguous (the reference's "
                                "processor reads it as channels first); pass a PIL image")
    _check_size((array.shape[1], array.shape[0]), where)
    return array


def _check_size(size: tuple[int, int], where: str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise InvalidInputError(f"{where}: the image has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise InvalidInputError(f"{where}: {width}x{height} pixels is more than {MAX_PIXELS} (a decompression "
                                "bomb?); refusing to decode it")


def read_image_file(path: str, where: str) -> bytes:
    """A local image file's bytes, at most FILE_LIMIT. The path was found to be a file when the
    input was classified, but may have been swapped since: it is opened without blocking (a FIFO
    would wait forever for a writer; a link is followed, as the reference's ``Image.open``
    follows one), then the opened descriptor must be a regular file before anything is read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise InvalidInputError(f"{where}: cannot read {path[:100]!r}: {e.strerror}") from None
    regular = False
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        if regular:
            with os.fdopen(fd, "rb") as f:  # which closes fd
                data = f.read(FILE_LIMIT + 1)
    except OSError as e:
        raise InvalidInputError(f"{where}: cannot read {path[:100]!r}: {e.strerror}") from None
    finally:
        if not regular:
            os.close(fd)
    if not regular:
        raise InvalidInputError(f"{where}: {path[:100]!r} is not a regular file (a FIFO, a device or a directory); "
                                "pass an image file")
    if len(data) > FILE_LIMIT:
        raise InvalidInputError(f"{where}: {path[:100]!r} is larger than {FILE_LIMIT >> 20} MiB")
    return data

"""Embeddings in the precisions vector stores take, as sentence-transformers' ``encode(precision=...)``
and ``quantize_embeddings`` make them: ``float32``; ``int8`` and ``uint8``, each dimension cut
into 256 buckets between a minimum and a maximum; ``binary`` and ``ubinary``, the signs packed
eight dimensions to a byte. A multi-vector encoder's token vectors are quantized each as one
embedding, with its verbs' ranges over all calibration tokens (sentence-transformers'
``MultiVectorEncoder.encode`` has no precision; vector stores that take multi-vectors take these).

The int8/uint8 ranges are the artifact's own, recorded at build time from the torch reference's
embeddings of the calibration texts (``Manifest.embedding_ranges``), or the caller's. Not the
batch's, as sentence-transformers' ``encode`` does by default: there a vector's codes depend on
which other texts share its call, and one text alone cannot be quantized at all; a service and a
backfill must give the same text the same codes."""

from __future__ import annotations

from typing import Any

import numpy as np

from .enums import ModuleKind
from .errors import InvalidInputError
from .manifest import Manifest, ranges_problem

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")


def quantize(embeddings: np.ndarray, precision: str, ranges: np.ndarray | None) -> np.ndarray:
    """``embeddings`` (float32, ``[n, dim]`` or ``[dim]``) in ``precision``; ``ranges`` is
    ``[2, dim]`` (minima, maxima), needed for int8 and uint8 only."""
    check_precision(precision)
    if precision == "float32":
        return embeddings
    if precision.endswith("binary"):
        packed = np.packbits(embeddings > 0, axis=-1)
        return (packed.astype(np.int16) - 128).astype(np.int8) if precision == "binary" else packed
    if ranges is None:
        raise InvalidInputError(f"precision {precision!r} needs ranges: this artifact records none (it predates "
                                "them); pass ranges=[minima, maxima] from your own embeddings")
    ranges = checked_ranges(ranges, embeddings.shape[-1])
    starts = ranges[0]
    steps = (ranges[1] - starts) / 255
    steps = np.where(steps == 0, 1, steps)
    buckets = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
    codes: np.ndarray = buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)
    return codes


def checked_ranges(ranges: Any, dimension: int) -> np.ndarray:
    """``ranges`` as float32 ``[2, dimension]`` (minima, maxima), or InvalidInputError saying what
    is wrong with them: by the manifest's own rule for recorded ranges (``ranges_problem``)."""
    try:
        array = np.asarray(ranges)
    except (TypeError, ValueError):  # ragged lists, unsized objects
        array = np.empty(0, dtype=object)
    if array.dtype.kind not in "iuf" or array.shape != (2, dimension):
        raise InvalidInputError(f"ranges must be [minima, maxima], two lists of {dimension} numbers (one per "
                                f"embedding dimension); got {_described(array)}")
    problem = ranges_problem(array[0].tolist(), array[1].tolist())
    if problem is not None:
        raise InvalidInputError(f"ranges: {problem}; pass [minima, maxima] with each minimum at most its maximum")
    return array.astype(np.float32)


def _described(array: np.ndarray) -> str:
    return "values that are not numbers" if array.dtype.kind not in "iuf" else f"shape {list(array.shape)}"


def recorded_ranges(manifest: Manifest, verb: str, normalize_embeddings: bool,
                    truncate_dim: int | None = None) -> np.ndarray | None:
    """The build-time ranges of ``verb``'s embeddings, cut to ``truncate_dim``: they describe the
    chain's own outputs, so they hold after ``normalize_embeddings`` only if the chain normalizes
    already and nothing was truncated. None where the artifact records none."""
    recorded = manifest.embedding_ranges.get(verb)
    if recorded is None:
        return None
    if manifest.takes_images:
        raise InvalidInputError("int8/uint8 on a text-and-image model needs ranges=: the recorded ranges are of "
                                "text embeddings, and its images' embeddings lie elsewhere")
    normalizes = any(m.kind is ModuleKind.NORMALIZE for m in manifest.modules)
    if normalize_embeddings and not (normalizes and truncate_dim is None):
        raise InvalidInputError("int8/uint8 with normalize_embeddings=True on this model needs ranges= of "
                                "normalized embeddings: the recorded ranges are of its outputs as they are")
    return np.array([recorded.minimum, recorded.maximum], dtype=np.float32)[:, :truncate_dim]

"""Weight files checked before anything loads them, and the loading itself watched.

A safetensors file is an 8-byte header length, a JSON header naming each tensor's dtype, shape
and byte range, and the bytes. Its header is read here and every range is checked against the
shapes and the file's size, so a truncated or lying file is named before torch maps it. A sharded
checkpoint's index must point at shards inside the folder, and the values themselves are read
once for NaN and Inf (``weight_values``). And transformers initialises weights that a checkpoint
lacks at random and only logs it: ``loading_problems`` names that from the reports
``st_internals.watch_loading`` collects.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path, PurePosixPath
from typing import Any, TypeGuard

from packager.chain.weight_values import check_weight_values, few
from packager.errors import SourceError, UnsafeSourceError
from packager.runtime.files import read_json

# The safetensors library refuses larger headers too.
MAX_HEADER_BYTES = 100_000_000
_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16,
    "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "F64": 64, "I64": 64, "U64": 64, "C64": 64, "F4": 4,
    "F6_E2M3": 6, "F6_E3M2": 6,
}
INDEX_SUFFIX = ".safetensors.index.json"
INDEX_LIMIT = 64 << 20


def check_weight_files(folder: Path, files: list[str]) -> None:
    """Check every safetensors file and shard index among ``files`` (paths relative to ``folder``)."""
    for rel in files:
        if rel.endswith(".safetensors"):
            check_safetensors(folder / rel, rel)
        elif rel.endswith(INDEX_SUFFIX):
            _check_index(folder, rel)


def check_safetensors(path: Path, name: str) -> None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        problem = _header_problem(f, size)
    if problem:
        raise SourceError(f"{name}: not a valid safetensors file ({problem}); the weights are truncated, corrupt or "
                          "were written by something else. Nothing was loaded from it.")
    check_weight_values(path, name)


def _header_problem(f: Any, size: int) -> str | None:
    read = _read_header(f, size)
    if isinstance(read, str):
        return read
    header, data_bytes = read
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        span = _tensor_span(name, entry)
        if isinstance(span, str):
            return span
        spans.append(span)
    return _layout_problem(spans, data_bytes)


def _read_header(f: Any, size: int) -> str | tuple[dict[str, Any], int]:
    """The header and the number of data bytes after it, or what is wrong with them."""
    if size < 8:
        return f"{size} bytes, shorter than the header length"
    (length,) = struct.unpack("<Q", f.read(8))
    if length > min(MAX_HEADER_BYTES, size - 8):
        return f"header length {length} exceeds the file ({size} bytes) or the {MAX_HEADER_BYTES}-byte limit"
    try:
        header = json.loads(f.read(length).decode("utf-8"))
    except (ValueError, RecursionError) as e:  # not UTF-8, not JSON, nested too deep, a 5000-digit number
        return f"header is not JSON: {type(e).__name__}: {str(e)[:200]}"
    if not isinstance(header, dict):
        return "header is not a JSON object"
    return header, size - 8 - length


def _tensor_span(name: str, entry: Any) -> str | tuple[int, int, str]:
    """A tensor's (begin, end, name) in the data, or what is wrong with its header entry."""
    if not isinstance(entry, dict):
        return f"tensor {name!r}: not an object"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _DTYPE_BITS:
        return f"tensor {name!r}: unknown dtype {dtype!r}"
    if not _ints(shape) or not _ints(offsets) or len(offsets) != 2 or not 0 <= offsets[0] <= offsets[1]:
        return f"tensor {name!r}: shape {shape!r} / data_offsets {offsets!r} are not valid"
    bits = math.prod(shape) * _DTYPE_BITS[dtype]
    if bits != 8 * (offsets[1] - offsets[0]):
        return (f"tensor {name!r}: {dtype} {shape} needs {bits / 8:g} bytes, its data_offsets {offsets} "
                f"give {offsets[1] - offsets[0]}")
    return offsets[0], offsets[1], name


def _layout_problem(spans: list[tuple[int, int, str]], data_bytes: int) -> str | None:
    """The tensors must tile the data exactly: no overlap, no gap, nothing after them."""
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            return f"tensor {name!r} starts at byte {begin}, not at {end}: tensors overlap or leave gaps"
        end = stop
    if end != data_bytes:
        return f"tensors cover {end} bytes of data but the file holds {data_bytes}"
    return None


def _ints(value: Any) -> TypeGuard[list[int]]:
    return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)


def _check_index(folder: Path, rel: str) -> None:
    """A sharded checkpoint's index names its shard files: they must be files beside it."""
    try:
        index = read_json(folder / rel, limit=INDEX_LIMIT, error=SourceError)
        shards = set(index["weight_map"].values())
    except (KeyError, TypeError, AttributeError) as e:
        raise SourceError(f"{rel}: not a valid safetensors index ({type(e).__name__}: {e})") from None
    directory = PurePosixPath(rel).parent
    for shard in sorted(map(str, shards)):
        pure = PurePosixPath(shard)
        if pure.is_absolute() or len(pure.parts) != 1 or pure.name in ("..", "."):
            raise UnsafeSourceError(f"{rel}: shard {shard!r} is not a file beside the index; refusing it")
        if not (folder / directory / shard).is_file():
            raise SourceError(f"{rel}: shard {shard!r} is missing")


def loading_problems(reports: list[tuple[str, Any]]) -> list[str]:
    """What the reports say was not loaded from the checkpoint: missing or mis-shaped weights."""
    problems = []
    for model, info in reports:
        missing = sorted(getattr(info, "missing_keys", None) or ())
        mismatched = sorted(getattr(info, "mismatched_keys", None) or ())
        if missing:
            problems.append(f"{model}: {len(missing)} weight(s) missing from the checkpoint ({few(missing)}) would be "
                            "initialised at random")
        if mismatched:
            shapes = [f"{key} {list(ckpt)} in the checkpoint, {list(model_shape)} in the config"
                      for key, ckpt, model_shape in mismatched]
            problems.append(f"{model}: weight shapes disagree with the config ({few(shapes)})")
    return problems


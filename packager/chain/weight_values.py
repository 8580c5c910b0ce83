"""Weight values, read before torch loads them.

A float tensor holding NaN or Inf makes the reference's outputs NaN or Inf, and an integer tensor
where a model's float weights belong is cast to floats that mean nothing; either way the build
would fail far from the cause (at the output ranges, as an artifact problem) or gate garbage
against garbage. Both are named here, tensor by tensor, as what they are: a bad source.

Values are read in chunks of at most ``CHUNK_BYTES`` and tested on their bits (a non-finite float
has every exponent bit set), so memory stays bounded whatever the tensor's size, and bfloat16 and
float8 need no numpy type of their own.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from packager.errors import SourceError
from packager.runtime.files import read_json

CHUNK_BYTES = 16 << 20
# dtype -> (bytes per value, the bits that are all set in a NaN or Inf and in no finite value).
NON_FINITE_BITS = {"F64": (8, 0x7FF0_0000_0000_0000), "F32": (4, 0x7F80_0000), "F16": (2, 0x7C00),
                   "BF16": (2, 0x7F80), "F8_E5M2": (1, 0x7C), "F8_E4M3": (1, 0x7F)}
INTEGER_DTYPES = frozenset({"BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64"})
# Integer tensors that checkpoints legitimately hold: index buffers (BERT's position_ids,
# CLIP's), and batch-norm counters. They are buffers, never cast into float parameters.
_INTEGER_BUFFER_SUFFIXES = ("_ids", "num_batches_tracked")
_CONFIG_LIMIT = 64 << 20
_SHOWN = 4


def check_weight_values(path: Path, name: str) -> None:
    """Refuse a (header-checked) safetensors file whose float tensors hold NaN or Inf, or that
    holds integer weights in a model that is not quantized: every problem named, in one error."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        tensors = sorted((entry["data_offsets"][0], key, entry) for key, entry in header.items()
                         if key != "__metadata__")
        integers = [f"{key!r} ({entry['dtype']})" for _, key, entry in tensors
                    if entry["dtype"] in INTEGER_DTYPES and not key.endswith(_INTEGER_BUFFER_SUFFIXES)]
        non_finite = [f"{key!r} ({count} of {_values(entry)} values)" for begin, key, entry in tensors
                      if (count := _count_non_finite(f, 8 + length + begin, entry))]
    problems = []
    if non_finite:
        problems.append(f"{len(non_finite)} tensor(s) hold NaN or Inf values: {few(non_finite)}; every output "
                        "would be NaN or Inf. The weights are corrupt or were saved after training diverged: use a "
                        "checkpoint whose weights are finite")
    config = _config(path.parent)
    if integers and "quantization_config" not in config:
        declared = config.get("torch_dtype") or config.get("dtype") or "floating-point"
        problems.append(f"{len(integers)} weight tensor(s) are integers where the model's weights are "
                        f"{declared} (its config.json; no quantization_config): {few(integers)}; they would be cast "
                        "to meaningless floats. Save the weights in the config's dtype")
    if problems:
        raise SourceError(f"{name}: " + ";\n  ".join(problems) + ". Nothing was loaded from it.")


def _count_non_finite(f: Any, offset: int, entry: dict[str, Any]) -> int:
    """How many of a tensor's values are NaN or Inf (0 for the dtypes that have neither)."""
    import numpy as np

    if entry["dtype"] not in NON_FINITE_BITS:
        return 0
    size, bits = NON_FINITE_BITS[entry["dtype"]]
    remaining = entry["data_offsets"][1] - entry["data_offsets"][0]
    step = CHUNK_BYTES - CHUNK_BYTES % size
    f.seek(offset)
    count = 0
    while remaining:
        chunk = f.read(min(step, remaining))
        if not chunk:
            raise SourceError(f"{f.name}: ended while its tensors were read (changed while it was checked?)")
        remaining -= len(chunk)
        values = np.frombuffer(chunk, dtype=f"<u{size}")
        count += int(np.count_nonzero((values & values.dtype.type(bits)) == bits))
    return count


def _values(entry: dict[str, Any]) -> int:
    count = 1
    for dimension in entry["shape"]:
        count *= dimension
    return count


def _config(folder: Path) -> dict[str, Any]:
    """The config.json beside the weights (a transformer's), or {} (a Dense module's has no dtype)."""
    try:
        config = read_json(folder / "config.json", limit=_CONFIG_LIMIT, error=SourceError)
    except FileNotFoundError:
        return {}
    return config if isinstance(config, dict) else {}


def few(items: list[str], limit: int = _SHOWN) -> str:
    """The first ``limit`` items, and how many more."""
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")

"""Weight values, read before torch loads them, and integer tensors where float parameters belong.

A float tensor holding NaN or Inf makes the reference's outputs NaN or Inf, and an integer tensor
loaded into a float parameter is cast to floats that mean nothing; either way the build would fail
far from the cause (at the output ranges, as an artifact problem) or gate garbage against garbage.
Both are named here, tensor by tensor, as what they are: a bad source.

Values are read in chunks of at most ``CHUNK_BYTES`` and tested on their bits (a non-finite float
has every exponent bit set), so memory stays bounded whatever the tensor's size, and bfloat16 and
float8 need no numpy type of their own. Integer tensors are judged against the loaded model: index
buffers (``position_ids``), counters and quantized weights are buffers, never float parameters.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

from packager.errors import SourceError

CHUNK_BYTES = 16 << 20
# dtype -> (bytes per value, the bits that are all set in a NaN or Inf and in no finite value).
NON_FINITE_BITS = {"F64": (8, 0x7FF0_0000_0000_0000), "F32": (4, 0x7F80_0000), "F16": (2, 0x7C00),
                   "BF16": (2, 0x7F80), "F8_E5M2": (1, 0x7C), "F8_E4M3": (1, 0x7F)}
INTEGER_DTYPES = frozenset({"BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64"})
_SHOWN = 4


def check_weight_values(path: Path, name: str) -> None:
    """Refuse a (header-checked) safetensors file whose float tensors hold NaN or Inf, naming
    every such tensor in one error."""
    with open(path, "rb") as f:
        start, header = _header(f)
        non_finite = [f"{key!r} ({count} of {_values(entry)} values)" for key, entry in _tensors(header)
                      if (count := _count_non_finite(f, start + entry["data_offsets"][0], entry))]
    if non_finite:
        raise SourceError(f"{name}: {len(non_finite)} tensor(s) hold NaN or Inf values: {few(non_finite)}; every "
                          "output would be NaN or Inf. The weights are corrupt or were saved after training diverged: "
                          "use a checkpoint whose weights are finite. Nothing was loaded from it.")


def integer_parameters(folder: Path, files: list[str], parameters: dict[str, str]) -> list[str]:
    """The integer tensors among the safetensors ``files`` (relative to ``folder``) that load
    into one of ``parameters`` (the model's float parameters, qualified name -> dtype): a key
    matches a parameter whose name ends with it, else with it less its first part (a ``bert.``
    prefix that the loaded class strips)."""
    found = []
    for rel in files:
        if not rel.endswith(".safetensors"):
            continue
        with open(folder / rel, "rb") as f:
            header = _header(f)[1]
        for key, entry in _tensors(header):
            if entry["dtype"] in INTEGER_DTYPES:
                target = _parameter(key, parameters)
                if target:
                    found.append(f"{rel}: {key!r} is {entry['dtype']}, loaded into the {parameters[target]} "
                                 f"parameter {target}")
    return found


def _parameter(key: str, parameters: dict[str, str]) -> str | None:
    stripped = key.partition(".")[2]
    keys = [key, stripped] if "." in stripped else [key]  # never a bare "weight", which ends every layer's
    return next((name for k in keys for name in parameters if name == k or name.endswith("." + k)), None)


def _header(f: BinaryIO) -> tuple[int, dict[str, Any]]:
    """Where the tensors' bytes start, and the (already checked) header."""
    (length,) = struct.unpack("<Q", f.read(8))
    return 8 + length, json.loads(f.read(length))


def _tensors(header: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, entry) in file order."""
    return sorted(((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"])


def _count_non_finite(f: BinaryIO, offset: int, entry: dict[str, Any]) -> int:
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


def few(items: list[str], limit: int = _SHOWN) -> str:
    """The first ``limit`` items, and how many more."""
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")

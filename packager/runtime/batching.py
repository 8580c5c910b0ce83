"""How a route's inputs are batched: longest first, within a token budget, and for a session that
compiles per input shape, in bucketed widths and row counts."""

from __future__ import annotations

from collections.abc import Iterator

# A batch holds at most this many tokens once padded (32 texts of 8 tokens; 1 of 256): the work
# per token is the same in smaller batches, and their activations stay in cache, while
# onnxruntime's arena keeps the blocks of the largest batch it ran. Measured on
# all-MiniLM-L6-v2 (2 threads; same process, the budgets alternated, median of 3): against 1024
# tokens, 256 ran 1000 real sentences (batch_size 32) at 1.08x (fp32) / 1.03x (int8) and texts
# of 1 to 16 sentences (batch_size 64) at 1.06x / 1.20x, and the loader's peak RSS over 100 such
# calls fell from 242 to 184 MB (fp32) and from 193 to 139 MB (int8; benchmarks/bench_memory.py).
MAX_BATCH_TOKENS = 256


# An image batch holds at most this many images, whatever batch_size asks (a request cannot make
# the runtime hold thousands of images' pixels and activations at once); so does one input of a
# vision-language route (messages.conversation), whose images run in one batch.
MAX_BATCH_IMAGES = 32


# With a session that compiles per input shape (OpenVINO's CPU plugin keeps kernels and buffers
# for every shape it has run, about 1.4 MB each for all-MiniLM-L6-v2, and its caches' capacities
# do not bound them), a batch is padded to a bucketed width and a short batch to a bucketed row
# count, so a route runs in a few dozen shapes instead of one per (texts, length).
def bucket_width(length: int) -> int:
    """``length`` rounded up to eight steps per doubling, at least 8 tokens apart: 8, 16, ..., 64,
    80, ..., 128, 160, ..., 256, 320, ... (16 widths up to 256; less than 8 tokens of padding, or a
    quarter of the length above 64)."""
    return _round_up(length, steps=8, least=8)


def bucket_rows(count: int) -> int:
    """``count`` rounded up to four steps per doubling: 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, ...
    (less than a third of the rows are filler)."""
    return _round_up(count, steps=4, least=1)


def _round_up(n: int, *, steps: int, least: int) -> int:
    step = max(least, (1 << (n - 1).bit_length()) // steps)
    return -(-n // step) * step


def batches(order: list[int], lengths: list[int], batch_size: int, *, bucket_limit: int | None = None,
            max_tokens: int | None = None) -> Iterator[tuple[list[int], int, int]]:
    """Consecutive slices of ``order`` (longest first), each with the width to pad it to and the
    number of rows to run it as: at most ``batch_size`` inputs, and no more than ``max_tokens``
    (by default MAX_BATCH_TOKENS) tokens once padded (at least one input). Without
    ``bucket_limit`` a slice is padded to its longest input and runs as is; with it, the width is
    bucket_width's (not past ``bucket_limit``, the route's max length, unless the input already is)
    and a short slice runs as bucket_rows' rows (not past the full slice's)."""
    start = 0
    while start < len(order):
        width = lengths[order[start]]
        if bucket_limit is not None:
            width = max(width, min(bucket_width(width), bucket_limit))
        size = min(batch_size, max(1, (max_tokens or MAX_BATCH_TOKENS) // max(width, 1)))
        batch = order[start : start + size]
        rows = min(size, bucket_rows(len(batch))) if bucket_limit is not None else len(batch)
        yield batch, width, rows
        start += size

"""How fast a model runs: one loop, for the build's figures and for ``packager bench``.

Standard library only: ``packager.bench.worker`` imports this in a fresh process whose cold start
it times.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

Run = Callable[[list, int], Any]  # (inputs, batch_size) -> the model's own result


def measure_speed(run: Run, inputs: list, *, batch_size: int, rounds: int,
                  latency_inputs: int) -> tuple[dict[str, float], Any]:
    """Throughput (the median of ``rounds`` passes over ``inputs`` in batches of ``batch_size``,
    after a warm-up batch) and batch-1 latency p50/p99 over the first ``latency_inputs``; and the
    outputs of the last pass."""
    run(inputs[:batch_size], batch_size)
    passes, result = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        result = run(inputs, batch_size)
        passes.append(time.perf_counter() - started)
    latencies = []
    for item in inputs[:latency_inputs]:
        started = time.perf_counter()
        run([item], 1)
        latencies.append(time.perf_counter() - started)
    return {"inputs_per_second": len(inputs) / statistics.median(passes),
            "latency_p50_ms": 1000 * nearest_rank(latencies, 0.50),
            "latency_p99_ms": 1000 * nearest_rank(latencies, 0.99)}, result


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

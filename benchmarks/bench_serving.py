"""Serving latency: a registered version behind ``mlflow models serve`` (``--env-manager local``,
one worker, loopback), asked by an HTTP client one request at a time: p50 and p99 over 200
requests of 1 text and 200 of 32 texts (real sentences, a different slice per request), beside
the same calls to the loader in process, so the ratio is the cost of HTTP, JSON and MLflow.

    .venv/bin/python benchmarks/bench_serving.py [ARTIFACT] [--out FILE]

ARTIFACT defaults to all-MiniLM-L6-v2's ONNX fp32 build in dist/bench-speed/minilm (built there if
missing). It is registered in a throwaway SQLite registry and served from there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from models import ROOT, model_path
from results import print_table, save
from variants import build_variant

from mlflow_servers import model_server
from packager.runtime import load
from packager.validators.texts import real_sentences

REQUESTS, SIZES = 200, (1, 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", nargs="?", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving.json")
    args = parser.parse_args()
    artifact = args.artifact or minilm()
    texts = list(real_sentences())
    results: dict = {"artifact": artifact.name, "requests": REQUESTS}
    encode = load(artifact, threads=2).encode
    for size in SIZES:
        results[f"loader, {size} text(s)"] = _latencies(encode, texts, size)
    del encode
    from packager.registry.mlflow_store import MlflowStore

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as scratch:
        tracking = f"sqlite:///{scratch}/mlflow.db"
        registered = MlflowStore(tracking).register(artifact, "served")
        with model_server(Path(sys.executable), registered.model_uri, tracking, Path(scratch) / "serve.log") as url:
            def post(batch: list[str]) -> None:
                request = urllib.request.Request(f"{url}/invocations", data=json.dumps({"inputs": batch}).encode(),
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=120) as response:
                    json.loads(response.read())

            for size in SIZES:
                results[f"mlflow models serve, {size} text(s)"] = _latencies(post, texts, size)
    save(results, args.out)
    print_table(results, "calls", {"p50 ms": lambda row: f"{row['p50_ms']:.1f}",
                                   "p99 ms": lambda row: f"{row['p99_ms']:.1f}"})


def minilm() -> Path:
    dist = ROOT / "dist" / "bench-speed" / "minilm"
    report = build_variant(model_path("minilm"), "all-MiniLM-L6-v2", "onnx", "fp32", dist)
    return dist / report["variants"][0]["name"]


def _latencies(call, texts: list[str], size: int) -> dict:
    for i in range(10):  # warm up: first calls, first shapes
        call(texts[i * size:(i + 1) * size])
    times = []
    for i in range(REQUESTS):
        batch = [texts[(i * size + j) % len(texts)] for j in range(size)]
        started = time.perf_counter()
        call(batch)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 2), "p99_ms": round(times[int(0.99 * len(times)) - 1], 2)}


if __name__ == "__main__":
    main()

"""Serving under load: a registered version behind ``mlflow models serve`` (a torch-free
environment, ``--env-manager local``, one worker, loopback), asked by 1, 4 and 16 concurrent
clients for 60 s each. Each client sends its requests back to back over one keep-alive
connection: three in four carry one text, one in four eight texts, of mixed lengths (a sentence,
a few sentences, a paragraph past the model's 256 tokens), from a seeded draw of real sentences.

Reported per level: requests/s, texts/s, p50 / p95 / p99 latency, errors (any answer but 200, or
a dropped connection) and the server's RSS (every process of the server's session) before and
after the level, and the server's cold start. ``--sentences-only``: every request one sentence.

    .venv/bin/python benchmarks/bench_serving_load.py [ARTIFACT] [--seconds 60] [--clients 1 4 16]
        [--sentences-only] [--out FILE]

Coalescing concurrent requests into one batch inside the pyfunc was measured with this script at
6244bd2 (``--coalesce-ms``) and removed: docs/guides/serving.md#under-load has the figures.

ARTIFACT defaults to all-MiniLM-L6-v2's ONNX int8 build in dist/bench-speed/minilm (built there if
missing). The clients run in this process (threads), on the same 2 cores as the server: their
share of the CPU is part of what is measured.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from models import ROOT, model_path
from results import print_table, save
from variants import build_variant

from mlflow_servers import mlflow_server, model_server
from packager.validators.texts import real_sentences

WHEELS = ROOT / ".cache" / "runtime-wheels"
SERVING_VENV = ROOT / ".cache" / "bench-serving-venv"
SERVING_PACKAGES = ("numpy", "tokenizers", "onnxruntime", "openvino", "mlflow-skinny", "pandas")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", nargs="?", type=Path)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--sentences-only", action="store_true",
                        help="every request one sentence (the coalescing's best case) instead of the mix")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/serving_load.json "
                        "(serving_load_sentences.json with --sentences-only)")
    args = parser.parse_args()
    results_dir = ROOT / "benchmarks" / "results"
    args.out = args.out or results_dir / ("serving_load_sentences.json" if args.sentences_only else "serving_load.json")
    artifact = args.artifact or minilm_int8()
    python = serving_python()
    results: dict = {"artifact": artifact.name, "seconds": args.seconds, "cpus": os.cpu_count(),
                     "requests": "one sentence each" if args.sentences_only else "mixed",
                     "host_cpu": _cpu_model()}
    from packager.registry.mlflow_store import MlflowStore

    with tempfile.TemporaryDirectory(prefix="bench-serving-load-") as scratch, \
            mlflow_server(Path(scratch) / "registry") as registry:
        registered = MlflowStore(registry).register(artifact, "served")
        started = time.perf_counter()
        with model_server(python, registered.model_uri, registry, Path(scratch) / "serve.log") as url:
            cold = time.perf_counter() - started
            port = int(url.rsplit(":", 1)[1])
            first = time.perf_counter()
            _request(http.client.HTTPConnection("127.0.0.1", port, timeout=120), ["warm up"])
            results["cold start"] = {"ready_s": round(cold, 2),
                                     "first_request_ms": round((time.perf_counter() - first) * 1e3, 1)}
            for clients in args.clients:
                row = _level(port, clients, args.seconds, args.sentences_only)
                results[f"{clients} client(s)"] = row
                print(f"{clients} client(s): {row}", file=sys.stderr, flush=True)
    save(results, args.out)
    print_table(results, "run", {
        "requests/s": lambda r: f"{r['requests_per_s']:.1f}" if "requests_per_s" in r else "",
        "texts/s": lambda r: f"{r['texts_per_s']:.1f}" if "texts_per_s" in r else "",
        "p50 / p95 / p99 ms": lambda r: f"{r['p50_ms']:.1f} / {r['p95_ms']:.1f} / {r['p99_ms']:.1f}"
        if "p50_ms" in r else "",
        "errors": lambda r: str(r.get("errors", "")),
        "server RSS MB, start -> end": lambda r: f"{r['rss_start_mb']:.0f} -> {r['rss_end_mb']:.0f}"
        if "rss_start_mb" in r else f"ready in {r['ready_s']} s, first request {r['first_request_ms']} ms"})


def minilm_int8() -> Path:
    dist = ROOT / "dist" / "bench-speed" / "minilm"
    report = build_variant(model_path("minilm"), "all-MiniLM-L6-v2", "onnx", "int8", dist)
    return dist / report["variants"][0]["name"]


def serving_python() -> Path:
    """A model service's environment: the runtime and mlflow-skinny, from the wheels
    scripts/setup.sh keeps (no torch, no packager), made once under .cache."""
    python = SERVING_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(SERVING_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(WHEELS),
                        *SERVING_PACKAGES], check=True, env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    return python


def requests_of(seed: int, sentences_only: bool = False) -> list[list[str]]:
    """A client's requests: 3 in 4 of one text, 1 in 4 of eight, each text a sentence, three to
    five sentences, or twenty (past 256 tokens), drawn with ``seed``; or one sentence each."""
    sentences, draw = list(real_sentences()), random.Random(seed)
    if sentences_only:
        return [[draw.choice(sentences)] for _ in range(2000)]

    def text() -> str:
        return " ".join(draw.choices(sentences, k=draw.choice((1, 1, 3, 5, 20))))

    return [[text() for _ in range(8 if draw.random() < 0.25 else 1)] for _ in range(2000)]


def _request(connection: http.client.HTTPConnection, texts: list[str]) -> int:
    connection.request("POST", "/invocations", body=json.dumps({"inputs": texts}),
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    return response.status


def _level(port: int, clients: int, seconds: float, sentences_only: bool) -> dict:
    """``clients`` threads asking back to back for ``seconds``: the level's row."""
    rss_start = _server_rss(port)
    latencies: list[float] = []
    counts = {"requests": 0, "texts": 0, "errors": 0}
    lock = threading.Lock()
    todos = [requests_of(seed, sentences_only) for seed in range(clients)]
    deadline = time.perf_counter() + seconds

    def client(seed: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine, texts, errors, i = [], 0, 0, 0
        todo = todos[seed]
        while time.perf_counter() < deadline:
            batch = todo[i % len(todo)]
            i += 1
            started = time.perf_counter()
            try:
                ok = _request(connection, batch) == 200
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            mine.append((time.perf_counter() - started) * 1e3)
            texts += len(batch) if ok else 0
            errors += not ok
        connection.close()
        with lock:
            latencies.extend(mine)
            counts["requests"] += len(mine)
            counts["texts"] += texts
            counts["errors"] += errors

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()

    def quantile(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)

    return {"clients": clients, "requests": counts["requests"], "texts": counts["texts"],
            "requests_per_s": round(counts["requests"] / elapsed, 1),
            "texts_per_s": round(counts["texts"] / elapsed, 1),
            "p50_ms": round(statistics.median(latencies), 1), "p95_ms": quantile(0.95), "p99_ms": quantile(0.99),
            "errors": counts["errors"], "rss_start_mb": rss_start, "rss_end_mb": _server_rss(port)}


def _server_rss(port: int) -> float:
    """The resident memory, in MB, of every process in the session of the one listening on ``port``."""
    listening = next(c.pid for c in psutil.net_connections("tcp")
                     if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid)
    session = os.getsid(listening)
    total = 0
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session:
                total += process.memory_info().rss
        except (psutil.Error, ProcessLookupError):
            continue
    return round(total / 1e6, 1)


def _cpu_model() -> str:
    from packager.bench.host import describe_host

    return describe_host().summary()


if __name__ == "__main__":
    main()

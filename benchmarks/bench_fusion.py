"""What onnxruntime's attention fusion gains, by architecture: each model's route exported once
(torch.onnx dynamo), saved plain and after onnxscript's ORT fusions (what the fp32 recipe
ships), both run by onnxruntime (2 threads) on the same real sentences: the fused operators,
texts/s at batch 32 (the median of 3 passes, texts sorted by length as the loader batches them;
the two graphs take turns) and batch-1 p50 (a median of 3 medians), and the largest difference
between the two graphs' outputs.

    .venv/bin/python benchmarks/bench_fusion.py [MODEL ...] [--out FILE]

MODEL is a name from benchmarks/models.py (default: minilm mpnet-base roberta-base-shaped
modernbert-base-shaped qwen3-0.6b-shaped). The *-shaped models have random weights: their rows
are timing only; the tiny models' fused graphs are checked against torch by the fp32 gate in the
tests (tests/exporters/test_recipes.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import MODELS, ROOT, SHAPED, model_path
from results import save

from packager.chain import load_reference, read_chain
from packager.chain.graph import compile_routes
from packager.exporters.onnx import export_onnx
from packager.validators.texts import real_sentences

DEFAULT = ("minilm", "mpnet-base", "roberta-base-shaped", "modernbert-base-shaped", "qwen3-0.6b-shaped")
ATTENTION = ("Attention", "MultiHeadAttention", "GroupQueryAttention")
BATCH, THREADS = 32, 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(DEFAULT))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fusion.json")
    args = parser.parse_args()
    if unknown := sorted(set(args.models) - set(MODELS + SHAPED)):
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS + SHAPED)}")
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name in args.models:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        results[name] = measure(model_path(name))
        save(results, args.out)  # after each model: nothing lost to a later one
    print(table(results))


def measure(source: Path) -> dict:
    import onnx
    import torch

    chain = read_chain(str(source))
    (route,) = compile_routes(load_reference(chain), chain)
    parameters = sum(p.numel() for p in route.module.parameters())
    # Large models get fewer texts: a 0.6B decoder takes seconds per batch here.
    texts = list(real_sentences()[: 256 if parameters < 2e8 else 64])
    encoder = route.encoder
    tokens, _ = encoder.encode(texts, max_length=encoder.spec.max_length)
    tokens.sort(key=lambda t: len(t.ids))
    def feeds(batch: list) -> dict:
        return {name: array for name, array in encoder.pad(batch).items() if name in route.input_names}

    batches = [feeds(tokens[i:i + BATCH]) for i in range(0, len(tokens), BATCH)]
    singles = [feeds([t]) for t in tokens[:: max(1, len(tokens) // 64)]]
    row: dict = {"parameters": parameters, "texts": len(texts)}
    with tempfile.TemporaryDirectory(prefix="bench-fusion-") as scratch, torch.inference_mode():
        sessions, outputs = {}, {}
        for label, fuse in (("plain", False), ("fused", True)):
            path = Path(scratch) / f"{label}.onnx"
            fusions = export_onnx(route, path, fuse=fuse)
            ops = [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]
            sessions[label] = _session(path)
            outputs[label] = [sessions[label].run(None, feeds)[0] for feeds in batches]  # also the first calls
            _p50(sessions[label], singles)
            row[label] = {"fusions": {k: v for k, v in fusions.items() if v},
                          "attention_ops": sum(ops.count(op) for op in ATTENTION), "softmax_ops": ops.count("Softmax")}
        # The two graphs take turns, pass by pass: a busy spell of this shared machine hits both.
        passes: dict[str, list[float]] = {"plain": [], "fused": []}
        latencies: dict[str, list[float]] = {"plain": [], "fused": []}
        for _ in range(3):
            for label, session in sessions.items():
                passes[label].append(len(texts) / _seconds(session, batches))
                latencies[label].append(_p50(session, singles))
    for label in sessions:
        row[label].update(texts_per_s=statistics.median(passes[label]), p50_ms=statistics.median(latencies[label]))
    pairs = zip(outputs["plain"], outputs["fused"], strict=True)
    row["max_abs_diff"] = float(max(np.abs(a - b).max() for a, b in pairs))
    row["speedup"] = row["fused"]["texts_per_s"] / row["plain"]["texts_per_s"]
    row["p50_ratio"] = row["fused"]["p50_ms"] / row["plain"]["p50_ms"]
    return row


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _seconds(session, batches: list[dict]) -> float:
    started = time.perf_counter()
    for feeds in batches:
        session.run(None, feeds)
    return time.perf_counter() - started


def _p50(session, singles: list[dict]) -> float:
    times = []
    for feeds in singles:
        started = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def table(results: dict) -> str:
    lines = ["| model | params | fused attention ops | softmax left | plain texts/s | fused texts/s | x | "
             "p50 plain ms | p50 fused ms | max abs diff |", "|---" * 10 + "|"]
    for name, r in results.items():
        plain, fused = r["plain"], r["fused"]
        lines.append(f"| {name} | {r['parameters'] / 1e6:.0f} M | {fused['attention_ops']} | {fused['softmax_ops']} | "
                     f"{plain['texts_per_s']:.1f} | {fused['texts_per_s']:.1f} | {r['speedup']:.2f} | "
                     f"{plain['p50_ms']:.1f} | {fused['p50_ms']:.1f} | {r['max_abs_diff']:.1e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

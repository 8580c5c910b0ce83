"""``packager bench``: throughput, batch-1 latency, cold start and peak memory of artifacts on this
machine and the user's own texts, optionally against the torch reference they were built from.

Each target is measured in fresh processes (``packager.bench.worker``), one for throughput,
latency and memory and one per cold-start sample, so targets share no caches, threads or memory.
An artifact runs through its own loader, after this (trusted) runtime verified its files; the
reference is sentence-transformers in torch, after the checks the parity gate makes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from packager.errors import (
    ArtifactIntegrityError,
    InvalidInputError,
    MissingDependencyError,
    PackagerError,
    UsageError,
)
from packager.publish import verified_manifest
from packager.runtime.enums import ChainKind
from packager.runtime.manifest import Manifest
from packager.validators.metrics import max_abs_diff, row_cosine, spearman
from packager.validators.texts import calibration_inputs, read_inputs, real_sentences

log = logging.getLogger(__name__)

DEFAULT_TEXTS = 1000  # real sentences, as in benchmarks/bench_speed.py; cross-encoders get 192 pairs
WORKER = (sys.executable, "-m", "packager.bench.worker")
# Exit codes a worker can end with, back to the class that carries them; any other failure
# (a crash, an untyped exception) is unexpected.
_WORKER_ERRORS = {e.exit_code: e for e in (InvalidInputError, ArtifactIntegrityError, MissingDependencyError)}


@dataclass(frozen=True)
class Settings:
    """How to measure: intra-op threads, throughput batch size, passes over the inputs (their
    median) and cold-start processes (theirs), and how many inputs are timed one by one."""

    threads: int = 2
    batch_size: int = 32
    rounds: int = 3
    latency_inputs: int = 200

    def __post_init__(self) -> None:
        bad = [f"{k}={v!r}" for k, v in dataclasses.asdict(self).items()
               if isinstance(v, bool) or not isinstance(v, int) or v < 1]
        if bad:
            raise UsageError(f"bench settings must be positive integers: {', '.join(bad)}")


@dataclass(frozen=True)
class Target:
    """One thing to measure. ``mode`` tells the worker how to open ``path``: ``artifact`` or
    ``reference``; the benchmark adds sentence-transformers' own backends through its own
    ``command``."""

    name: str
    mode: str
    path: str
    kind: ChainKind
    graph_mb: float | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    command: tuple[str, ...] = WORKER


def bench(artifacts: list[Path], *, reference: str | None = None, inputs: list | Path | None = None,
          settings: Settings = Settings(), trust_remote_code: bool = False, allow_pickle: bool = False) -> list[dict]:
    """A row of figures per artifact (see ``measure``), the reference's first if one is given.

    ``inputs``: texts (pairs for cross-encoders), a file of them in the ``--validation-data``
    formats, or None for the built-in real sentences. ``reference``: the saved chain (folder or
    cached model id) to compare with; the artifacts must all be of its chain kind."""
    if not artifacts:
        raise UsageError("no artifacts to measure")
    targets = [artifact_target(Path(a)) for a in artifacts]
    kinds = sorted({t.kind.value for t in targets})
    if len(kinds) > 1:
        raise UsageError(f"the artifacts are of different chain kinds ({', '.join(kinds)}): they take different "
                         "inputs; measure one kind at a time")
    kind = targets[0].kind
    if inputs is None:
        inputs = default_inputs(kind)
    elif isinstance(inputs, Path):
        inputs = read_inputs(inputs, pairs=kind is ChainKind.CROSS_ENCODER)
    baseline = reference_target(reference, kind, trust_remote_code=trust_remote_code,
                                allow_pickle=allow_pickle) if reference else None
    return measure(targets, inputs, settings, reference=baseline)


def default_inputs(kind: ChainKind) -> list:
    """Real English sentences from ``pydoc_data.topics``; for cross-encoders, the built-in
    query/document pairs of calibration."""
    if kind is ChainKind.CROSS_ENCODER:
        return calibration_inputs(pairs=True)
    return list(real_sentences()[:DEFAULT_TEXTS])


def artifact_target(path: Path) -> Target:
    """An artifact directory, its files verified now: its own loader will run in the worker."""
    manifest = verified_manifest(path)
    return Target(name=path.name, mode="artifact", path=str(path.resolve()), kind=manifest.chain_kind,
                  graph_mb=graph_mb(manifest))


def reference_target(source: str, kind: ChainKind, *, trust_remote_code: bool = False,
                     allow_pickle: bool = False) -> Target:
    """The torch reference: ``source`` checked as the parity gate checks it, before it loads."""
    if importlib.util.find_spec("sentence_transformers") is None:
        raise MissingDependencyError("--reference runs sentence-transformers: pip install 'chain-packager[build]'")
    from packager.chain import read_chain

    chain = read_chain(source, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    if chain.kind is not kind:
        raise UsageError(f"--reference {source} is a {chain.kind.value}, the artifacts are {kind.value}s")
    return Target(name=f"reference ({kind.value}, torch)", mode="reference", path=str(chain.source.folder), kind=kind,
                  trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)


def graph_mb(manifest: Manifest) -> float:
    """Megabytes of the route graphs with their weights (``model.onnx`` + ``model.onnx.data``,
    ``model.xml`` + ``model.bin``); tokenizer files and the loader are not counted."""
    stems = tuple(f"{PurePosixPath(route.graph).with_suffix('')}." for route in manifest.routes)
    return sum(f.size for f in manifest.files if f.path.startswith(stems)) / 1e6


def measure(targets: list[Target], inputs: list, settings: Settings = Settings(), *,
            reference: Target | None = None) -> list[dict]:
    """Measure each target (the reference first) on ``inputs``: inputs per second (the median of
    ``rounds`` passes in batches), batch-1 latency p50/p99 in ms, cold start in s (the median of
    ``rounds`` fresh processes: imports, load and the first call, from the worker's first line),
    the worker's peak RSS in MB. With a reference, each row also has ``x_ref`` (its throughput
    over the reference's) and its outputs' agreement with the reference's (see ``agreement``)."""
    if not inputs:
        raise UsageError("no inputs to measure")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="packager-bench-") as directory:
        work = Path(directory)
        (work / "inputs.json").write_text(json.dumps(inputs, ensure_ascii=False), encoding="utf-8")
        reference_row = reference_outputs = None
        if reference is not None:
            reference_row, reference_outputs = _measure_target(reference, work, index=0, count=len(inputs),
                                                               settings=settings)
            rows.append({**reference_row, "x_ref": 1.0})
        for index, target in enumerate(targets, 1):
            row, outputs = _measure_target(target, work, index=index, count=len(inputs), settings=settings)
            if reference_row is not None and reference_outputs is not None:
                row["x_ref"] = row["inputs_per_second"] / reference_row["inputs_per_second"]
                row.update(_checked_agreement(target, reference_outputs, outputs))
            rows.append(row)
    return rows


def agreement(kind: ChainKind, reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """How close outputs are to the reference's: per-input cosine (min, mean) of embeddings, sparse
    ones as full vectors, a multi-vector encoder's per kept token; for cross-encoders the largest
    score difference and the smallest Spearman correlation of the scores over all pairs (per label)."""
    if kind is not ChainKind.CROSS_ENCODER:
        cosine = row_cosine(reference, candidate)
        return {"min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean())}
    reference, candidate = reference.reshape(len(reference), -1), candidate.reshape(len(candidate), -1)
    return {"max_abs_diff": max_abs_diff(reference, candidate),
            "spearman": min(spearman(reference[:, j], candidate[:, j]) for j in range(reference.shape[1]))}


def _checked_agreement(target: Target, reference: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    if outputs.shape != reference.shape:
        raise UsageError(f"{target.name}: outputs of shape {outputs.shape}, the reference's are {reference.shape}; "
                         "is --reference the model it was built from?")
    return agreement(target.kind, reference, outputs)


def _measure_target(target: Target, work: Path, *, index: int, count: int,
                    settings: Settings) -> tuple[dict[str, Any], np.ndarray]:
    """One worker for throughput, latency and memory (it saves its outputs), then ``rounds``
    cold-start workers."""
    log.info("bench: %s (%d inputs, %d threads)", target.name, count, settings.threads)
    out = work / f"outputs-{index}.npy"
    job = {"mode": target.mode, "path": target.path, "kind": target.kind.value, "inputs": str(work / "inputs.json"),
           "out": str(out), "cold": False, "trust_remote_code": target.trust_remote_code,
           "allow_pickle": target.allow_pickle, **dataclasses.asdict(settings)}
    figures = _run_worker(target, job, work)
    colds = [_run_worker(target, {**job, "cold": True}, work)["cold_start_s"] for _ in range(settings.rounds)]
    row = {"name": target.name, "mode": target.mode, "path": target.path, "inputs": count, **figures,
           "cold_start_s": statistics.median(colds), "graph_mb": target.graph_mb}
    return row, np.load(out)


def _run_worker(target: Target, job: dict[str, Any], work: Path) -> dict[str, float]:
    """Run one worker; a failure names the target and ends with the worker's last line on stderr."""
    (work / "job.json").write_text(json.dumps(job), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if target.mode == "artifact":  # never run bytecode caches found inside the artifact, nor write any there
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    done = subprocess.run([*target.command, str(work / "job.json")], capture_output=True, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    last = next((line.strip() for line in reversed(done.stderr.splitlines()) if line.strip()), "no message")
    error = _WORKER_ERRORS.get(done.returncode, PackagerError)
    raise error(f"bench: {target.name} ({target.path}): the measuring process failed (exit status "
                f"{done.returncode}): {last}")


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table; the comparison columns appear when the rows have them."""
    present = [(header, key, fmt) for header, key, fmt in _COLUMNS if any(key in row for row in rows)]
    lines = ["| " + " | ".join(header for header, _, _ in present) + " |", "|---" * len(present) + "|"]
    for row in rows:
        cells = [cell(row.get(key), fmt) for _, key, fmt in present]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


_COLUMNS = (  # header, row key, format
    ("variant", "name", "s"), ("inputs/s", "inputs_per_second", ".1f"), ("x ref", "x_ref", ".2f"),
    ("p50 ms", "latency_p50_ms", ".2f"), ("p99 ms", "latency_p99_ms", ".2f"), ("cold s", "cold_start_s", ".2f"),
    ("peak RSS MB", "peak_rss_mb", ".0f"), ("graph MB", "graph_mb", ".1f"),
    ("min cos", "min_cosine", ".5f"), ("mean cos", "mean_cosine", ".5f"),
    ("max abs diff", "max_abs_diff", ".2e"), ("spearman", "spearman", ".4f"),
)


def cell(value: Any, fmt: str) -> str:
    """A table cell: ``value`` formatted, or a dash for none."""
    return "\N{EN DASH}" if value is None else format(value, fmt)

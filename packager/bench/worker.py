"""The measuring side of ``packager bench``: one target, in a fresh process, so that targets share
no caches, threads or memory, and peak RSS is the target's own.

    python -m packager.bench.worker JOB_JSON

The job (written by ``packager.bench``) names the target, how to open it (``mode``), the inputs
file and the settings. The worker prints one JSON line of figures and saves the outputs of the last
throughput pass as an ``.npy``; with ``cold`` set it only times opening the model and the first
call, from this module's first line. A typed error ends it with its exit code and one line on
stderr.

Only the standard library (and ``packager.bench.speed``, which is standard library only) is imported
at the top: a cold start should count the model's own imports, not ours, and the benchmark runs
this worker in an environment with sentence-transformers' own backends and none of packager's
dependencies (``benchmarks/worker.py`` adds those modes).
"""

import time

STARTED = time.perf_counter()

import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from packager.bench.speed import Run, measure_speed  # noqa: E402

Opener = Callable[[dict], Run]
# The verb measured, by chain kind (encode for the others): a multi-vector encoder's corpus side.
VERBS = {"CrossEncoder": "predict", "MultiVectorEncoder": "encode_document"}


def open_artifact(job: dict) -> Run:
    """The artifact's own loader, imported as a service imports it (``packager.bench`` verified the
    files with the trusted runtime first, and sets PYTHONPYCACHEPREFIX so bytecode caches inside
    the artifact are neither used nor written)."""
    sys.path.insert(0, job["path"])
    from loader import load

    model = load(job["path"], threads=job["threads"])
    verb = getattr(model, VERBS.get(job["kind"], "encode"))
    return lambda inputs, batch_size: verb(inputs, batch_size=batch_size)


def open_reference(job: dict) -> Run:
    """sentence-transformers in torch, as the parity gate loads it (``packager.bench`` checked the
    folder with ``read_chain`` first)."""
    import torch

    torch.set_num_threads(job["threads"])
    from packager.chain.reference import open_model

    model = open_model(job["path"], job["kind"], trust_remote_code=job["trust_remote_code"],
                       allow_pickle=job["allow_pickle"])
    verb = getattr(model, VERBS.get(job["kind"], "encode"))
    return lambda inputs, batch_size: verb(inputs, batch_size=batch_size, show_progress_bar=False)


OPENERS: dict[str, Opener] = {"artifact": open_artifact, "reference": open_reference}


def measure(run: Run, inputs: list, job: dict) -> dict[str, float]:
    """``measure_speed`` with the job's settings, and the process's peak RSS; saves the outputs of
    the last pass."""
    figures, result = measure_speed(run, inputs, batch_size=job["batch_size"], rounds=job["rounds"],
                                    latency_inputs=job["latency_inputs"])
    _save(job["out"], result)
    return {**figures, "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    """This process's peak resident memory: Linux's VmHWM. Not getrusage's ru_maxrss, which Linux
    carries over from the process image before exec: a worker started by a large parent (a test
    run with torch loaded) would report the parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):  # no procfs (macOS: ru_maxrss is in bytes there, and per process)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def _save(path: str, result: Any) -> None:
    """The outputs as a dense float32 array, whichever library made them: the loader's SparseBatch
    (``toarray``), a torch tensor (sparse or not), numpy, or a multi-vector encoder's list of
    ``[tokens, dim]`` matrices (their rows, text after text)."""
    import numpy as np

    if isinstance(result, list):
        result = np.concatenate([np.asarray(m.cpu() if hasattr(m, "cpu") else m, dtype=np.float32) for m in result])
    elif hasattr(result, "toarray"):
        result = result.toarray()
    elif hasattr(result, "to_dense"):
        result = result.to_dense().cpu().numpy()
    np.save(path, np.asarray(result, dtype=np.float32))


def main(argv: list[str], openers: dict[str, Opener] = OPENERS, started: float = STARTED) -> None:
    """Run the job in ``argv[0]``; ``started`` is when the calling process began (its first line)."""
    with open(argv[0], encoding="utf-8") as f:
        job = json.load(f)
    with open(job["inputs"], encoding="utf-8") as f:
        inputs = json.load(f)
    try:
        run = openers[job["mode"]](job)
        if job["cold"]:
            run(inputs[:1], 1)
            print(json.dumps({"cold_start_s": time.perf_counter() - started}))
        else:
            print(json.dumps(measure(run, inputs, job)))
    except Exception as e:
        # Our errors, and the same classes from an artifact's own copy of the runtime, carry their
        # exit code; anything else leaves its traceback, whose last line names it.
        code = getattr(e, "exit_code", None)
        if not isinstance(code, int):
            raise
        print(f"{type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])

"""One side's ``encode`` throughput in a fresh process: the reference in torch (2 threads) or a
packaged artifact through its loader, after a warm-up pass; the times of each pass and the
process's peak RSS (its VmHWM)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def measure(target: str, inputs_code: str, *, batch_size: int, passes: int) -> dict:
    """``target`` is ``reference:FOLDER`` or ``artifact:FOLDER``; ``inputs_code`` is Python that
    sets ``inputs`` (run in the measuring process, so the inputs are made there)."""
    code = textwrap.dedent("""
        import json, sys, time
        kind, _, path = {target!r}.partition(":")
    """).format(target=target) + textwrap.dedent(inputs_code) + textwrap.dedent(f"""
        if kind == "reference":
            import torch
            from sentence_transformers import SentenceTransformer
            torch.set_num_threads(2)
            model = SentenceTransformer(path, device="cpu")
            encode = lambda: model.encode(inputs, batch_size={batch_size}, show_progress_bar=False)
        else:
            from packager.runtime import load
            model = load(path, threads=2)
            encode = lambda: model.encode(inputs, batch_size={batch_size})
        encode()
        times = []
        for _ in range({passes}):
            start = time.perf_counter()
            encode()
            times.append(time.perf_counter() - start)
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec
        peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        print(json.dumps({{"times": times, "rss_kb": peak}}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])

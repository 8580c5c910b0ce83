"""Building the variants a benchmark measures: one ``packager build`` per format and precision,
reused when its report is already there (so a benchmark can be re-run without rebuilding)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def build_variant(source: Path, name: str, fmt: str, precision: str, dist: Path) -> dict:
    """Build one variant of ``source`` into ``dist`` (unless its report is there) and return the
    build's report; a variant its gate refused (exit 6) has its failures in the report."""
    reports = dist / f"reports-{fmt}-{precision}"
    if not (reports / "report.json").exists():
        print(f"building {fmt} {precision} ...", file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, "-m", "packager.cli", "build", str(source), "--name", name, "--out",
                               str(dist), "--format", fmt, "--precision", precision, "--no-register", "-q",
                               "--reports", str(reports)], stdout=subprocess.DEVNULL)
        if done.returncode not in (0, 6):
            raise SystemExit(f"building {fmt} {precision} failed (exit {done.returncode})")
    return json.loads((reports / "report.json").read_text())

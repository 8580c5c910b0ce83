"""A benchmark's results: written as JSON under benchmarks/results/, and printed as a table."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def save(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


def print_table(results: dict, first: str, columns: dict[str, Callable[[dict], str]]) -> None:
    """One row per result that is a dict: its name under ``first``, then each column's text."""
    print(f"| {first} | {' | '.join(columns)} |\n|{'---|' * (len(columns) + 1)}")
    for name, row in results.items():
        if isinstance(row, dict):
            print(f"| {name} | {' | '.join(cell(row) for cell in columns.values())} |")

"""A build's reports: ``report.json`` (the record; its schema is ``schemas/report.schema.json``),
``report.md`` (a summary for a CI job summary or a pull-request comment, ``markdown``) and
``report.html`` (the same with plots: matplotlib PNGs embedded, so the file stands alone; ``html``,
``plots``). The Markdown and HTML are rendered from the JSON alone, so all three always agree.
``artifact`` describes a built artifact for ``packager inspect``. Every JSON file the project
writes (a report, an artifact's ``parity.json``) is written as ``write_json`` writes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from packager.reports.html import html_report
from packager.reports.markdown import markdown

REPORT_SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).parent.parent / "schemas" / "report.schema.json"
FILES = ("report.json", "report.md", "report.html")

__all__ = ["FILES", "REPORT_SCHEMA_VERSION", "SCHEMA_FILE", "html_report", "markdown", "write_json", "write_reports"]


def write_json(path: Path, data: Any) -> None:
    """JSON as this project writes it: sorted keys, indented, UTF-8, a final newline."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def write_reports(directory: Path, data: dict[str, Any]) -> list[Path]:
    """Write the three reports of ``data`` (``BuildResult.to_dict()``) into ``directory``, each
    through a temporary file and a rename, so a reader never sees half a report."""
    record = json.dumps({"schema_version": REPORT_SCHEMA_VERSION, **data}, indent=2, sort_keys=True,
                        ensure_ascii=False) + "\n"
    report = json.loads(record)  # the others from exactly what report.json holds
    texts = {"report.json": record, "report.md": markdown(report), "report.html": html_report(report)}
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in texts.items():
        path, partial = directory / name, directory / f".{name}.partial"
        try:
            partial.write_text(text, encoding="utf-8")
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        written.append(path)
    return written

"""A build's reports: ``report.json`` (the record; its schema is ``schemas/report.schema.json``),
``report.md`` (a summary for a CI job summary or a pull-request comment) and ``report.html``
(the same with plots: matplotlib PNGs embedded, so the file stands alone).

The Markdown and HTML are rendered from the JSON alone, so all three always agree.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

REPORT_SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).parent / "schemas" / "report.schema.json"
FILES = ("report.json", "report.md", "report.html")
# The figure each chain kind is judged by first (worst over verbs), in tables and the speed plot.
_HEADLINE = {"SentenceTransformer": "min_cosine", "SparseEncoder": "min_cosine", "CrossEncoder": "spearman_min"}


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


def headline(report: dict[str, Any], variant: dict[str, Any]) -> tuple[str, float | None]:
    """The metric a variant of this chain kind is judged by first, and its worst value over the verbs."""
    metric = _HEADLINE[report["chain_kind"]]
    values = [v for k, v in variant["parity"]["metrics"].items() if k.rpartition(".")[2] == metric]
    return metric, (min(values) if values else None)


def markdown(report: dict[str, Any]) -> str:
    ok = report["status"] == "ok"
    lines = [f"## chain-packager build {'passed' if ok else 'FAILED'}: `{report['source']}`", "",
             f"{report['chain_kind']}, {len(report['variants'])} variant(s), "
             f"{report['seconds']:.1f} s, started {report['started_at']}.", ""]
    if report["error"]:
        lines += [f"**{report['error']['type']}** (exit {report['exit_code']}):", "", "```",
                  report["error"]["message"], "```", ""]
    if report["variants"]:
        lines += ["| variant | recipe | parity | headline | inputs/s | p50 ms | registered |",
                  "|---|---|---|---|---|---|---|"]
        for variant in report["variants"]:
            lines.append("| " + " | ".join(_row(report, variant)) + " |")
        lines.append("")
    for variant in report["variants"]:
        failures = variant["parity"]["failures"]
        if failures:
            lines += [f"**{variant['name']}** failed its gate:", ""] + [f"- {f}" for f in failures] + [""]
    lines.append("Full figures and plots: `report.html`; the record: `report.json`.")
    return "\n".join(lines) + "\n"


def _row(report: dict[str, Any], variant: dict[str, Any]) -> list[str]:
    metric, value = headline(report, variant)
    speed = variant.get("speed") or {}
    registered = variant.get("registered")
    return [f"`{variant['name']}`", f"`{variant['recipe']}`", "passed" if variant["parity"]["passed"] else "FAILED",
            f"{metric} {value:.6g}" if value is not None else "-",
            f"{speed['inputs_per_second']:.1f}" if speed else "-", f"{speed['latency_p50_ms']:.2f}" if speed else "-",
            (f"{registered['model_uri']}" + (f" @{registered['alias']}" if registered["alias"] else " (existing)"))
            if registered else "-"]


def html_report(report: dict[str, Any]) -> str:
    e = html.escape
    ok = report["status"] == "ok"
    verdict = "<span class='ok'>passed</span>" if ok else "<span class='bad'>FAILED</span>"
    parts = [f"<h1>chain-packager build {verdict}</h1>",
             f"<p>Source <code>{e(report['source'])}</code> ({e(report['chain_kind'])}), "
             f"{report['seconds']:.1f} s, started {e(report['started_at'])} on {e(report['machine']['platform'])} "
             f"({report['machine']['cpus']} CPUs), chain-packager {e(report['packager_version'])}.</p>"]
    if report["error"]:
        parts.append(f"<h2>Why it stopped: {e(report['error']['type'])} (exit {report['exit_code']})</h2>"
                     f"<pre>{e(report['error']['message'])}</pre>")
    if report["variants"]:
        head = ["variant", "recipe", "parity", "headline", "inputs/s", "p50 ms", "registered"]
        parts.append("<h2>Variants</h2><table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{e(c.strip('`'))}</td>" for c in _row(report, v)) + "</tr>"
                               for v in report["variants"]) + "</table>")
    plots = [(title, png) for title, png in _plots(report) if png]
    if plots:
        parts.append("<h2>Plots</h2>" + "".join(
            f"<figure><img alt='{e(title)}' src='data:image/png;base64,{png}'><figcaption>{e(title)}</figcaption>"
            "</figure>" for title, png in plots))
    for variant in report["variants"]:
        parity = variant["parity"]
        parts.append(f"<h2>{e(variant['name'])}: parity {'passed' if parity['passed'] else 'FAILED'} over "
                     f"{parity['inputs']} inputs</h2><table><tr><th>check</th><th>value</th><th>threshold</th>"
                     "<th></th></tr>" + "".join(
                         f"<tr><td>{e(c['metric'])}</td><td>{c['value']:.8g}</td><td>{c['threshold']:g}</td>"
                         f"<td class='{'ok' if c['passed'] else 'bad'}'>{'ok' if c['passed'] else 'FAIL'}</td></tr>"
                         for c in parity["checks"]) + "</table>")
        parts += [f"<p class='bad'>{e(problem)}</p>" for problem in parity["failures"] if "needs" not in problem]
        if parity["worst"]:
            columns = list(dict.fromkeys(k for w in parity["worst"] for k in w))
            parts.append("<p>Least similar inputs:</p><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in columns)
                         + "</tr>" + "".join("<tr>" + "".join(f"<td>{e(_cell(w.get(c)))}</td>" for c in columns)
                                             + "</tr>" for w in parity["worst"]) + "</table>")
        for attempt in variant.get("attempts", []):
            parts.append(f"<p>auto: {e(attempt['recipe'])}: {e(attempt['outcome'])}</p>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>chain-packager build report</title>"
            "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}"
            ".ok{color:#186a1d}.bad{color:#b00020}pre{background:#f4f4f4;padding:1em;white-space:pre-wrap}"
            "img{max-width:100%}</style></head><body>" + "".join(parts) + "</body></html>\n")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, list):  # a cross-encoder pair
        return " | ".join(map(str, value))
    return "" if value is None else str(value)


def _plots(report: dict[str, Any]) -> list[tuple[str, str | None]]:
    variants = report["variants"]
    if report["chain_kind"] == "CrossEncoder":
        return [("Reference vs candidate scores, per pair and variant", _scores_plot(variants)),
                ("Speed vs accuracy: Spearman (worst query) against inputs per second", _speed_plot(report))]
    return [("Per-input cosine to the torch reference, per variant and verb", _cosine_plot(variants)),
            ("Speed vs accuracy: worst per-input cosine against inputs per second", _speed_plot(report))]


def _label(variant: dict[str, Any]) -> str:
    """Short enough for a legend: a build makes one variant per format and precision."""
    return f"{variant['format']} {variant['precision']}"


def _figure() -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, no display backend

    figure = Figure(figsize=(8, 4.5))
    figure.subplots_adjust(left=0.11, right=0.97, top=0.96, bottom=0.13)  # fixed: a layout engine costs 2x
    return figure, figure.subplots()


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _cosine_plot(variants: list[dict[str, Any]]) -> str | None:
    """The distribution of 1 - cosine (log scale, so float rounding and int8 error both show) as
    a cumulative curve per variant and verb, with each gate's min_cosine as a dashed line."""
    curves = []
    for variant in variants:
        verbs: dict[tuple[float, ...], list[str]] = {}  # verbs that ran the same route gave the same cosines
        for verb, sample in variant["parity"]["samples"].items():
            verbs.setdefault(tuple(sample.get("cosine", ())), []).append(verb)
        curves += [(_label(variant) + (f" ({', '.join(names)})" if len(verbs) > 1 else ""), list(cosines))
                   for cosines, names in verbs.items() if cosines]
    if not curves:
        return None
    figure, ax = _figure()
    floor = 1e-9
    for label, cosines in curves:
        distances = sorted(max(1.0 - c, floor) if math.isfinite(c) else 1.0 for c in cosines)
        ax.step(distances, [(i + 1) / len(distances) for i in range(len(distances))], where="post", label=label)
    for threshold in sorted({c["threshold"] for v in variants for c in v["parity"]["checks"]
                             if c["metric"].rpartition(".")[2] == "min_cosine"}):
        ax.axvline(max(1.0 - threshold, floor), linestyle="--", color="grey", linewidth=1)
        ax.annotate(f"gate {threshold:g}", (max(1.0 - threshold, floor), 0.02), rotation=90, fontsize=8,
                    color="grey")
    ax.set_xscale("log")
    ax.set_xlabel(f"1 - cosine to the reference (log; {floor:g} and below drawn at {floor:g})")
    ax.set_ylabel("fraction of inputs at or below")
    ax.legend(fontsize=8)
    return _png(figure)


def _scores_plot(variants: list[dict[str, Any]]) -> str | None:
    pairs = [(_label(v), s["reference"], s["candidate"]) for v in variants for s in v["parity"]["samples"].values()
             if s.get("reference")]
    if not pairs:
        return None
    figure, ax = _figure()
    for label, reference, candidate in pairs:
        ax.scatter(reference, candidate, s=12, alpha=0.7, label=label)
    low = min(min(r + c) for _, r, c in pairs)
    high = max(max(r + c) for _, r, c in pairs)
    ax.plot([low, high], [low, high], color="grey", linewidth=1, linestyle="--", label="candidate = reference")
    ax.set_xlabel("torch reference score")
    ax.set_ylabel("artifact score")
    ax.legend(fontsize=8)
    return _png(figure)


def _speed_plot(report: dict[str, Any]) -> str | None:
    points = [(_label(v), v["speed"]["inputs_per_second"], headline(report, v)) for v in report["variants"]
              if v.get("speed") and headline(report, v)[1] is not None]
    if not points:
        return None
    figure, ax = _figure()
    for name, speed, (metric, value) in points:
        ax.scatter([speed], [value], s=40)
        ax.annotate(name, (speed, value), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("inputs per second (batches of 32, the build machine, calibration inputs)")
    ax.set_ylabel(points[0][2][0] + " (worst verb)")
    ax.margins(0.2)
    return _png(figure)

"""``report.html``: every variant's checks, its least similar inputs and the plots, in one file."""

from __future__ import annotations

import html
from typing import Any

from packager.reports.markdown import row
from packager.reports.plots import plots


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
                     + "".join("<tr>" + "".join(f"<td>{e(c.strip('`'))}</td>" for c in row(report, v)) + "</tr>"
                               for v in report["variants"]) + "</table>")
    drawn = [(title, png) for title, png in plots(report) if png]
    if drawn:
        parts.append("<h2>Plots</h2>" + "".join(
            f"<figure><img alt='{e(title)}' src='data:image/png;base64,{png}'><figcaption>{e(title)}</figcaption>"
            "</figure>" for title, png in drawn))
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

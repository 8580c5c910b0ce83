"""``report.md``: the summary table and the failures, for a CI job summary or a pull-request
comment; its rows are the HTML report's table too."""

from __future__ import annotations

from typing import Any

from packager.validators.report import worst_by_metric

# The figure each chain kind is judged by first (worst over verbs), in tables and the speed plot.
_HEADLINE = {"SentenceTransformer": "min_cosine", "SparseEncoder": "min_cosine", "CrossEncoder": "spearman_min",
             "MultiVectorEncoder": "token_min_cosine"}


def headline(report: dict[str, Any], variant: dict[str, Any]) -> tuple[str, float | None]:
    """The metric a variant of this chain kind is judged by first, and its worst value over the verbs."""
    metric = _HEADLINE[report["chain_kind"]]
    return metric, worst_by_metric(variant["parity"]["metrics"]).get(metric)


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
            lines.append("| " + " | ".join(row(report, variant)) + " |")
        lines.append("")
    for variant in report["variants"]:
        failures = variant["parity"]["failures"]
        if failures:
            lines += [f"**{variant['name']}** failed its gate:", ""] + [f"- {f}" for f in failures] + [""]
    lines.append("Full figures and plots: `report.html`; the record: `report.json`.")
    return "\n".join(lines) + "\n"


def row(report: dict[str, Any], variant: dict[str, Any]) -> list[str]:
    metric, value = headline(report, variant)
    speed = variant.get("speed") or {}
    registered = variant.get("registered")
    return [f"`{variant['name']}`", f"`{variant['recipe']}`", "passed" if variant["parity"]["passed"] else "FAILED",
            f"{metric} {value:.6g}" if value is not None else "-",
            f"{speed['inputs_per_second']:.1f}" if speed else "-", f"{speed['latency_p50_ms']:.2f}" if speed else "-",
            (f"{registered['model_uri']}" + (f" @{registered['alias']}" if registered["alias"] else " (existing)"))
            if registered else "-"]

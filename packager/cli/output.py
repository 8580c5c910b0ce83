"""What the command line prints: one line per built variant, registration outcomes, the table of
registered versions, the benchmark's footnote."""

from __future__ import annotations

from packager.registry.store import RegisteredVersion, VersionInfo
from packager.validators.report import ParityReport, worst_by_metric

# The figures ``packager list`` shows, the first two a version has (worst over its verbs).
LIST_METRICS = ("min_cosine", "mean_cosine", "spearman_min", "top10_overlap_mean", "max_rel_diff")


def parity_line(report: ParityReport) -> str:
    """The worst value of each gated metric over the verbs, e.g. "min_cosine 0.9999999999"."""
    if not report.passed:
        return "parity FAILED, published anyway (--allow-parity-failure): " + "; ".join(report.failures)
    worst = worst_by_metric({check.metric: check.value for check in report.checks})
    return "parity passed (" + ", ".join(f"{metric} {value:.10g}" for metric, value in worst.items()) + ")"


def registered_line(registered: RegisteredVersion) -> str:
    if registered.existing:
        return (f"already registered as {registered.model_uri} (an identical build; --force-new-version registers "
                "another)")
    return f"registered {registered.model_uri} @{registered.alias}"


def versions_table(versions: list[VersionInfo]) -> str:
    rows = [("version", "aliases", "format", "precision", "recipe", "parity", "source", "verified")]
    for v in versions:
        worst = worst_by_metric(v.parity_metrics)
        figures = [f"{metric} {worst[metric]:.6g}" for metric in LIST_METRICS if metric in worst][:2]
        rows.append((v.version, ",".join(v.aliases) or "-", v.format, v.precision, v.recipe,
                     " ".join([v.parity_status, *figures]), v.source, "yes" if v.verified else "NO"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)

"""The report's plots, as base64 PNGs: the distribution of each variant's per-input cosine (or a
cross-encoder's reference vs candidate scores), and speed against accuracy."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

from packager.reports.markdown import headline


def plots(report: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The plots, drawn with matplotlib's default style whatever the process set before (a
    caller's or a library's rcParams, a ``matplotlibrc`` in the working directory): the same
    report.json gives the same pictures in every process."""
    from matplotlib import style

    with style.context("default"):
        return _plots(report)


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
    for name, speed, (_, value) in points:
        ax.scatter([speed], [value], s=40)
        ax.annotate(name, (speed, value), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("inputs per second (batches of 32, the build machine, calibration inputs)")
    ax.set_ylabel(points[0][2][0] + " (worst verb)")
    ax.margins(0.2)
    return _png(figure)

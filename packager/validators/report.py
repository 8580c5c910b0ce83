"""The parity report: every metric, every gate check, every failure, in one object."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from packager.runtime.enums import ParityStatus
from packager.runtime.manifest import ParitySummary

# Metrics where smaller is better; every other gated metric must reach its threshold from below.
LOWER_IS_BETTER = frozenset({"max_abs_diff", "max_rel_diff", "score_rel_diff", "logit_rel_diff", "dot_rel_diff",
                             "nnz_mean_abs_diff", "similarity_rel_diff"})

Gate = dict[str, float]  # metric -> threshold, e.g. {"min_cosine": 0.99999}


def lower_is_better(metric: str) -> bool:
    """For a metric name, possibly prefixed by its verb ("encode_query.max_rel_diff")."""
    return metric.rpartition(".")[2] in LOWER_IS_BETTER


def worst_by_metric(values: dict[str, float]) -> dict[str, float]:
    """The worst value of each metric over the verbs: ``{"encode.min_cosine": 0.9, "encode_query.min_cosine":
    0.8}`` gives ``{"min_cosine": 0.8}`` (the largest, for metrics where lower is better)."""
    worst: dict[str, float] = {}
    for name, value in values.items():
        metric = name.rpartition(".")[2]
        pick = max if lower_is_better(metric) else min
        worst[metric] = pick(worst.get(metric, value), value)
    return worst


@dataclass(frozen=True)
class Check:
    metric: str  # possibly prefixed by the verb: "encode_query.min_cosine"
    value: float
    threshold: float

    @property
    def passed(self) -> bool:  # False for NaN either way
        if lower_is_better(self.metric):
            return bool(self.value <= self.threshold)
        return bool(self.value >= self.threshold)

    def describe(self) -> str:
        needs = "<=" if lower_is_better(self.metric) else ">="
        return f"{self.metric} = {self.value:.6g} (needs {needs} {self.threshold:g})"


@dataclass(frozen=True)
class ParityReport:
    inputs: int
    inputs_sha256: str
    metrics: dict[str, float]
    checks: tuple[Check, ...]
    problems: tuple[str, ...] = ()  # structural failures: shapes, counts, non-finite values
    worst: tuple[dict, ...] = field(default=())  # the least similar inputs, for the reader
    # Per input and verb, for the plots: {"cosine": [...]}, or a cross-encoder's scores
    # {"reference": [...], "candidate": [...]} (every label of every pair, flattened).
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.problems and all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[str]:
        return list(self.problems) + [c.describe() for c in self.checks if not c.passed]

    def describe(self) -> str:
        head = f"parity {'passed' if self.passed else 'FAILED'} over {self.inputs} inputs"
        lines = [head] + [f"  {'ok  ' if c.passed else 'FAIL'} {c.describe()}" for c in self.checks]
        lines += [f"  FAIL {p}" for p in self.problems]
        failed = {c.metric.rpartition(".")[0] for c in self.checks if not c.passed}
        lines += [f"  worst of {w['verb']}: " + ", ".join(f"{k} {v!r:.100}" for k, v in w.items() if k != "verb")
                  for w in self.worst if not self.passed and (w.get("verb") in failed or "" in failed)]
        return "\n".join(lines)

    def with_run(self, other: ParityReport, label: str) -> ParityReport:
        """This report and ``other``'s (the same inputs, the artifact run another way) in one:
        ``other``'s metrics, checks and problems prefixed by ``label``; passed only if both did."""
        if other.inputs_sha256 != self.inputs_sha256:
            raise ValueError("parity reports over different inputs cannot be joined")
        return dataclasses.replace(
            self, metrics={**self.metrics, **{f"{label}.{k}": v for k, v in other.metrics.items()}},
            checks=self.checks + tuple(dataclasses.replace(c, metric=f"{label}.{c.metric}") for c in other.checks),
            problems=self.problems + tuple(f"{label}: {p}" for p in other.problems),
            worst=self.worst + tuple({**w, "verb": f"{label}.{w['verb']}" if w.get("verb") else label}
                                     for w in other.worst))

    def to_dict(self) -> dict:
        return {
            "inputs": self.inputs, "inputs_sha256": self.inputs_sha256, "passed": self.passed,
            "metrics": self.metrics, "failures": self.failures, "worst": list(self.worst), "samples": self.samples,
            "checks": [{"metric": c.metric, "value": c.value, "threshold": c.threshold, "passed": c.passed}
                       for c in self.checks],
        }

    def summary(self, gate: Gate) -> ParitySummary:
        status = ParityStatus.PASSED if self.passed else ParityStatus.FAILED_ALLOWED
        return ParitySummary(status=status, texts=self.inputs, texts_sha256=self.inputs_sha256, gate=dict(gate),
                             metrics=dict(self.metrics), failures=tuple(self.failures))


def inputs_digest(inputs: list) -> str:
    return hashlib.sha256(json.dumps(inputs, ensure_ascii=False).encode("utf-8")).hexdigest()

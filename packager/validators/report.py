"""The parity report: every metric, every gate check, every failure, in one object."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from packager.runtime.manifest import ParityStatus, ParitySummary


@dataclass(frozen=True)
class Gate:
    """Thresholds a candidate must meet. ``None`` leaves a metric reported but not gated."""

    min_cosine: float = 0.99999
    mean_cosine: float | None = None
    neighbour_agreement: float | None = None

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Check:
    metric: str
    value: float
    threshold: float

    @property
    def passed(self) -> bool:
        return bool(self.value >= self.threshold)  # False for NaN

    def describe(self) -> str:
        return f"{self.metric} = {self.value:.6g} (needs >= {self.threshold:g})"


@dataclass(frozen=True)
class ParityReport:
    route: str
    texts: int
    texts_sha256: str
    metrics: dict[str, float]
    checks: tuple[Check, ...]
    problems: tuple[str, ...] = ()  # structural failures: shapes, counts, non-finite values
    worst: tuple[dict, ...] = field(default=())  # the lowest-cosine texts, for the reader

    @property
    def passed(self) -> bool:
        return not self.problems and all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[str]:
        return list(self.problems) + [c.describe() for c in self.checks if not c.passed]

    def describe(self) -> str:
        head = f"parity {'passed' if self.passed else 'FAILED'} on route {self.route!r} over {self.texts} texts"
        lines = [head] + [f"  {'ok  ' if c.passed else 'FAIL'} {c.describe()}" for c in self.checks]
        lines += [f"  FAIL {p}" for p in self.problems]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "route": self.route, "texts": self.texts, "texts_sha256": self.texts_sha256, "passed": self.passed,
            "metrics": self.metrics, "failures": self.failures, "worst": list(self.worst),
            "checks": [{"metric": c.metric, "value": c.value, "threshold": c.threshold, "passed": c.passed}
                       for c in self.checks],
        }

    def summary(self, gate: Gate) -> ParitySummary:
        status = ParityStatus.PASSED if self.passed else ParityStatus.FAILED_ALLOWED
        return ParitySummary(status=status, texts=self.texts, texts_sha256=self.texts_sha256, gate=gate.as_dict(),
                             metrics=dict(self.metrics), failures=tuple(self.failures))


def texts_digest(texts: list[str]) -> str:
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode("utf-8")).hexdigest()

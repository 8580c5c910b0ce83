"""What a build did, as far as it got: per variant its artifact, parity, speed and registration,
and the failures; ``to_dict`` is the content of ``report.json`` (``packager.reports``)."""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packager.registry.store import RegisteredVersion
from packager.runtime.enums import Format, Precision
from packager.runtime.manifest import Manifest
from packager.validators.report import ParityReport


@dataclass
class VariantResult:
    format: Format
    precision: Precision
    recipe: str
    artifact: Path
    manifest: Manifest
    parity: ParityReport
    seconds: float
    speed: dict[str, float]  # measured through the artifact's loader at build time; empty if not measured
    attempts: list[dict[str, Any]] = field(default_factory=list)  # --precision auto: every recipe tried
    registered: RegisteredVersion | None = None

    def figures(self) -> dict[str, float]:
        """What was measured while building, for the registry."""
        return {"build.seconds": round(self.seconds, 2), **{f"speed.{k}": v for k, v in self.speed.items()}}

    def to_dict(self) -> dict[str, Any]:
        return {"status": "published", "format": self.format.value, "precision": self.precision.value,
                "recipe": self.recipe, "name": self.artifact.name, "artifact": str(self.artifact),
                "build_seconds": round(self.seconds, 2), "speed": self.speed, "parity": self.parity.to_dict(),
                "attempts": self.attempts,
                "registered": dataclasses.asdict(self.registered) if self.registered else None}


@dataclass
class BuildResult:
    """What a build did, as far as it got: the content of its reports."""

    source: str
    chain_kind: str
    reports: Path
    variants: list[VariantResult] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # variants refused by their gate
    error: dict[str, Any] | None = None  # why the build stopped, if it did
    started: float = field(default_factory=time.time)

    def fail(self, error: BaseException) -> None:
        """Record why the build stopped; an error without an exit code is a bug (1)."""
        code = getattr(error, "exit_code", 1)
        self.error = {"type": type(error).__name__, "message": str(error),
                      "exit_code": code if isinstance(code, int) else 1}

    def to_dict(self) -> dict[str, Any]:
        from packager import __version__

        return {"status": "failed" if self.error else "ok", "exit_code": self.error["exit_code"] if self.error else 0,
                "error": self.error, "source": self.source, "chain_kind": self.chain_kind,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                "seconds": round(time.time() - self.started, 2),
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "packager_version": __version__,
                "variants": [v.to_dict() for v in self.variants] + self.failed}

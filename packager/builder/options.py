"""What a build is asked to do, checked when it is made: every option a user can give, and the
two a test fixture may turn off (the speed measurement and the reports, each tested on its own)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from packager.errors import UsageError
from packager.registry.store import CANDIDATE_ALIAS
from packager.runtime.enums import Format, Precision

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")  # what MLflow accepts


@dataclass(frozen=True)
class BuildOptions:
    formats: tuple[Format, ...] = (Format.ONNX,)
    precisions: tuple[Precision, ...] = (Precision.FP32,)
    out: Path = Path("dist")
    name: str | None = None
    revision: str | None = None
    register: str | None = None
    alias: str = CANDIDATE_ALIAS  # set on each new verified version
    tracking_uri: str | None = None
    force_new_version: bool = False  # register even if an identical build is already registered
    validation_data: Path | None = None
    calibration_data: Path | None = None
    auto: bool = False  # --precision auto: the fastest int8 recipe that passes, else fp32
    recipe: str | None = None  # a named recipe instead of the default one
    gates: dict[tuple[Precision, str], float] = field(default_factory=dict)  # overrides of the default gates
    token_embeddings: bool = False
    allow_parity_failure: bool = False
    trust_remote_code: bool = False
    allow_pickle: bool = False
    reports: Path | None = None  # default: OUT/NAME-report
    # Not command-line options: a build that a test makes to use its artifact can skip these
    # (their results then say "not measured" / nothing is written); --precision auto needs speed.
    measure_speed: bool = True
    write_reports: bool = True

    def __post_init__(self) -> None:
        if self.name is not None and not _NAME.fullmatch(self.name):
            raise UsageError(f"--name {self.name!r}: use letters, digits, '.', '_' and '-' (not first)")
        if not _ALIAS.fullmatch(self.alias) or self.alias == "latest" or re.fullmatch(r"[vV]\d+", self.alias):
            raise UsageError(f"--alias {self.alias!r}: use letters, digits, '_' and '-', not 'latest' or 'v<N>'")
        if not self.formats or not (self.precisions or self.auto):
            raise UsageError("at least one format and one precision are needed")
        if self.auto and (self.precisions or self.recipe):
            raise UsageError("--precision auto picks the recipe itself; give neither other precisions nor --recipe")
        if self.auto and not self.measure_speed:
            raise UsageError("--precision auto picks the fastest recipe, so it measures speed")

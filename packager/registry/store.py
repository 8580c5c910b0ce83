"""What the build and the command line need of a registry (``Store``), and the records a store
hands back: a version just registered (``RegisteredVersion``) and a version as ``packager list``
shows it (``VersionInfo``). Every store implements this protocol; none is imported here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

CANDIDATE_ALIAS = "candidate"
MEMORY_SCHEME = "memory://"


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    alias: str | None  # the alias this call set, if any
    model_uri: str
    tracking_uri: str
    existing: bool = False  # an identical build was already registered; nothing new was created
    run_id: str | None = None  # the MLflow run that holds a new version's files and reports


@dataclass(frozen=True)
class VersionInfo:
    """One registered version as ``packager list`` shows it."""

    version: str
    aliases: tuple[str, ...]
    created: int  # milliseconds since the epoch
    verified: bool
    format: str
    precision: str
    recipe: str
    parity_status: str
    parity_metrics: dict[str, float]  # by verb-prefixed name, as in the manifest
    source: str  # location@sha256 prefix
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "aliases": list(self.aliases), "created": self.created,
                "verified": self.verified, "tags": self.tags}


class Store(Protocol):
    """What the build and the command line need of a registry."""

    tracking_uri: str

    def ping(self) -> None: ...

    def register(self, artifact: Path, name: str, *, alias: str = CANDIDATE_ALIAS, force_new_version: bool = False,
                 figures: dict[str, float] | None = None) -> RegisteredVersion: ...

    def log_reports(self, registered: RegisteredVersion, reports: Path) -> None: ...

    def promote(self, name: str, alias: str, *, version: str | None = None,
                from_alias: str | None = None) -> RegisteredVersion: ...

    def pull(self, uri: str, out: Path) -> Path: ...

    def versions(self, name: str) -> list[VersionInfo]: ...

    def cleanup(self, name: str, *, older_than_s: float | None = None) -> list[str]: ...


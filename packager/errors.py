"""The exception tree. Every class carries the exit code the CLI returns for it.

    PackagerError (1)                      root; defined in packager.runtime.errors
    ├── UsageError (2)                     bad options or option combinations
    ├── InvalidInputError (2)              bad arguments to a runtime call (runtime)
    │   └── UnsupportedVerbError (2)       a verb the artifact's chain kind does not have (runtime)
    ├── SourceError (3)                    source missing, not a saved chain, malformed files
    ├── UnsafeSourceError (4)              pickle weights, paths leaving the folder
    ├── UnsupportedModuleError (4)         module types outside the allow-list or not compilable
    ├── ExportError (5)                    a graph could not be exported or written
    ├── ParityError (6)                    the candidate does not reproduce the reference; carries the report
    ├── RegistryError (7)                  the model registry refused or failed
    ├── ArtifactIntegrityError (8)         files do not match the manifest (runtime)
    └── MissingDependencyError (9)         names the package or extra to install (runtime)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from packager.runtime.errors import (
    ArtifactIntegrityError,
    InvalidInputError,
    MissingDependencyError,
    PackagerError,
    UnsupportedVerbError,
)

if TYPE_CHECKING:
    from packager.validators.report import ParityReport

__all__ = [
    "ArtifactIntegrityError",
    "ExportError",
    "InvalidInputError",
    "MissingDependencyError",
    "PackagerError",
    "ParityError",
    "RegistryError",
    "SourceError",
    "UnsafeSourceError",
    "UnsupportedModuleError",
    "UnsupportedVerbError",
    "UsageError",
]


class UsageError(PackagerError):
    """Bad options or option combinations, or unreadable validation data."""

    exit_code = 2


class SourceError(PackagerError):
    """The source is missing, not a saved chain, or has malformed ``modules.json`` or configs."""

    exit_code = 3


class UnsafeSourceError(PackagerError):
    """The source has pickle weights, paths leaving its folder, or files that are not regular files."""

    exit_code = 4


class UnsupportedModuleError(PackagerError):
    """A module type outside the allow-list, or one this version does not compile."""

    exit_code = 4


class ExportError(PackagerError):
    """A graph could not be exported or written."""

    exit_code = 5


class ParityError(PackagerError):
    """The candidate does not reproduce the reference: nothing published, nothing registered; carries the report."""

    exit_code = 6

    def __init__(self, message: str, report: ParityReport) -> None:
        super().__init__(message)
        self.report = report


class RegistryError(PackagerError):
    """The model registry refused or failed (the local artifact is kept)."""

    exit_code = 7

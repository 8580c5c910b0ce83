"""Errors the runtime raises. The root of the whole tree lives here because the runtime may
import nothing from the build side; ``packager.errors`` extends it and draws the full tree.

Each class carries the process exit code the CLI uses for it.
"""

from __future__ import annotations


class PackagerError(Exception):
    """Root of every error chain-packager raises on purpose."""

    exit_code = 1


class InvalidInputError(PackagerError, ValueError):
    """A caller passed something the API does not accept (wrong type, empty batch size...)."""

    exit_code = 2


class UnsupportedVerbError(InvalidInputError):
    """The verb exists in sentence-transformers, but not for this artifact's chain kind or routes."""


class ArtifactIntegrityError(PackagerError):
    """An artifact's files do not match its manifest, or the manifest itself is invalid."""

    exit_code = 8


class MissingDependencyError(PackagerError, ImportError):
    """An optional package is needed for this operation; the message names what to install."""

    exit_code = 9

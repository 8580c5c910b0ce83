"""What a registered version carries about itself: its lineage as tags (source, chain, format,
recipe, parity, tools, the calling repository's commit), the key that makes two builds the same
build, and those tags read back for ``packager list``. No mlflow here."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

from packager.registry.store import VersionInfo
from packager.runtime.manifest import Manifest

VERIFIED_TAG = "packager.verified"
BUILD_KEY_TAG = "packager.build_key"
# "host:pid" of the process registering a version (or a run): how a later registration or
# `packager cleanup` tells a registration in progress from one that was killed.
OWNER_TAG = "packager.owner"
PARITY_PREFIX = "packager.parity."
# A registration takes seconds from creating its version to verifying it (minutes for a large
# model's download); an unverified version or a running run older than this was abandoned.
ABANDONED_AFTER_S = 1800
# The parts of a manifest that make two builds the same build; built_at, file digests and the
# measured parity figures may differ between two runs of the same build.
_NOT_IN_BUILD_KEY = ("built_at", "files", "parity", "sealed_sha256")


def build_key(manifest: Manifest) -> str:
    """What identifies a build: the source's files, format, precision, recipe and its decisions,
    calibration, gate, routes and tool versions; not when it ran."""
    data = json.loads(manifest.to_json())
    for field in _NOT_IN_BUILD_KEY:
        data.pop(field)
    data["gate"] = manifest.parity.gate
    data["source"].pop("files", None)  # summarized by source.sha256
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()


def lineage_tags(manifest: Manifest) -> dict[str, str]:
    tags = {
        "packager.artifact": manifest.name, "packager.chain_kind": manifest.chain_kind.value,
        "packager.format": manifest.format.value, "packager.precision": manifest.precision.value,
        "packager.recipe": manifest.recipe.name,
        "packager.source.kind": manifest.source.kind.value, "packager.source.location": manifest.source.location,
        "packager.source.sha256": manifest.source.sha256, "packager.source.revision": manifest.source.revision or "",
        "packager.parity.status": manifest.parity.status.value, "packager.built_at": manifest.built_at,
    }
    if manifest.calibration is not None:
        tags["packager.calibration.sha256"] = manifest.calibration.sha256
    tags.update({f"{PARITY_PREFIX}{k}": f"{v:.8g}" for k, v in manifest.parity.metrics.items()})
    tags.update({f"packager.tool.{k}": v for k, v in manifest.tools.items()})
    return tags


def git_tags(cwd: Path | None = None) -> dict[str, str]:
    """The commit of the calling repository (the working directory's), when there is one."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    return {"packager.git.commit": commit, "packager.git.dirty": str(bool(git("status", "--porcelain"))).lower()}


def version_info(version: str, aliases: tuple[str, ...], *, created: int, tags: dict[str, str]) -> VersionInfo:
    """A version as ``packager list`` shows it, from the tags registration gave it."""
    metrics = {}
    for key, value in tags.items():
        if key.startswith(PARITY_PREFIX) and key != f"{PARITY_PREFIX}status":
            try:
                metrics[key[len(PARITY_PREFIX):]] = float(value)
            except ValueError:
                continue
    source = tags.get("packager.source.location", "?") + "@" + tags.get("packager.source.sha256", "")[:12]
    return VersionInfo(version=version, aliases=aliases, created=created, verified=tags.get(VERIFIED_TAG) == "true",
                       format=tags.get("packager.format", "?"), precision=tags.get("packager.precision", "?"),
                       recipe=tags.get("packager.recipe", "?"), parity_status=tags.get(f"{PARITY_PREFIX}status", "?"),
                       parity_metrics=metrics, source=source, tags=dict(tags))


def owner() -> str:
    """What OWNER_TAG records: this machine and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def abandoned(recorded: str | None, started_ms: int | None, older_than_s: float = ABANDONED_AFTER_S) -> bool:
    """Whether a version or run that is not finished was left by a process that is gone: one
    of this host whose process no longer exists (``recorded``: its OWNER_TAG), or any that
    started ``older_than_s`` ago."""
    host, _, pid = (recorded or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, under another user
            pass
        if int(pid) != os.getpid():
            return False
    return time.time() - (started_ms or 0) / 1000 > older_than_s

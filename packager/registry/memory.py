"""A registry in memory, behind the same ``Store`` protocol as MLflow's: for unit tests of
everything that only needs *a* registry (the build's registration step, the command line's
listing, promoting and pulling), as httpx's MockTransport stands in for a network. Artifacts are
copied into a temporary directory, verified on the way in and on the way out, and versions keep
the lineage tags MLflow would hold. ``open_store("memory://NAME")`` gives the same store for the
same name within a process."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from packager.errors import InvalidInputError, RegistryError, UsageError
from packager.publish import new_stage, publish, verified_manifest
from packager.registry.lineage import BUILD_KEY_TAG, VERIFIED_TAG, build_key, lineage_tags, version_info
from packager.registry.store import CANDIDATE_ALIAS, MEMORY_SCHEME, RegisteredVersion, VersionInfo
from packager.runtime.enums import ParityStatus

_STORES: dict[str, InMemoryStore] = {}


def memory_store(uri: str) -> InMemoryStore:
    return _STORES.setdefault(uri, InMemoryStore(uri))


@dataclass
class _Version:
    number: int
    artifact: Path
    tags: dict[str, str]
    created: int = field(default_factory=lambda: int(time.time() * 1000))
    reports: list[str] = field(default_factory=list)


class InMemoryStore:
    def __init__(self, tracking_uri: str = f"{MEMORY_SCHEME}default") -> None:
        self.tracking_uri = tracking_uri
        self._root = Path(tempfile.mkdtemp(prefix="packager-memory-registry-"))
        self._models: dict[str, list[_Version]] = {}
        self._aliases: dict[str, dict[str, int]] = {}

    def ping(self) -> None:
        return None

    def register(self, artifact: Path, name: str, *, alias: str = CANDIDATE_ALIAS, force_new_version: bool = False,
                 figures: dict[str, float] | None = None) -> RegisteredVersion:
        manifest = verified_manifest(artifact)
        key = build_key(manifest)
        versions = self._models.setdefault(name, [])
        existing = next((v for v in reversed(versions) if v.tags[BUILD_KEY_TAG] == key), None)
        if existing is not None and not force_new_version:
            return RegisteredVersion(name=name, version=str(existing.number), alias=None, existing=True,
                                     model_uri=f"models:/{name}/{existing.number}", tracking_uri=self.tracking_uri)
        number = len(versions) + 1
        copy = Path(shutil.copytree(artifact, self._root / name / str(number) / artifact.name))
        versions.append(_Version(number, copy, {**lineage_tags(manifest), BUILD_KEY_TAG: key, VERIFIED_TAG: "true"}))
        self._aliases.setdefault(name, {})[alias] = number
        return RegisteredVersion(name=name, version=str(number), alias=alias, model_uri=f"models:/{name}/{number}",
                                 tracking_uri=self.tracking_uri, run_id=f"memory-{name}-{number}")

    def log_reports(self, registered: RegisteredVersion, reports: Path) -> None:
        self._version(registered.name, registered.version).reports = sorted(p.name for p in reports.iterdir())

    def promote(self, name: str, alias: str, *, version: str | None = None,
                from_alias: str | None = None) -> RegisteredVersion:
        if (version is None) == (from_alias is None):
            raise UsageError("promote: give exactly one of --version N and --from-alias ALIAS")
        chosen = self._version(name, version) if version is not None else self._by_alias(name, from_alias or "")
        if verified_manifest(chosen.artifact).parity.status is not ParityStatus.PASSED:
            raise RegistryError(f"{name} version {chosen.number} did not pass its parity gate; it cannot be promoted")
        self._aliases[name][alias] = chosen.number
        return RegisteredVersion(name=name, version=str(chosen.number), alias=alias,
                                 model_uri=f"models:/{name}@{alias}", tracking_uri=self.tracking_uri)

    def pull(self, uri: str, out: Path) -> Path:
        name, _, which = uri.removeprefix("models:/").partition("@")
        chosen = self._by_alias(name, which) if which else self._version(*name.split("/", 1))
        manifest = verified_manifest(chosen.artifact)
        stage = new_stage(out, "pull")
        try:
            copy = Path(shutil.copytree(chosen.artifact, stage / manifest.name))
            publish(copy, out / manifest.name, manifest)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return out / manifest.name

    def versions(self, name: str) -> list[VersionInfo]:
        if name not in self._models:
            raise RegistryError(f"{self.tracking_uri} has no registered model named {name!r}")
        aliases: dict[int, list[str]] = {}
        for alias, number in self._aliases.get(name, {}).items():
            aliases.setdefault(number, []).append(alias)
        return [version_info(str(v.number), tuple(sorted(aliases.get(v.number, []))), created=v.created, tags=v.tags)
                for v in reversed(self._models[name])]

    def cleanup(self, name: str, *, older_than_s: float | None = None) -> list[str]:
        return []  # nothing here is ever left half-registered

    def _version(self, name: str, version: str) -> _Version:
        versions = self._models.get(name, [])
        if not version.isdigit() or not 1 <= int(version) <= len(versions):
            raise InvalidInputError(f"models:/{name}/{version}: no such registered model or version")
        return versions[int(version) - 1]

    def _by_alias(self, name: str, alias: str) -> _Version:
        number = self._aliases.get(name, {}).get(alias)
        if number is None:
            raise InvalidInputError(f"models:/{name}@{alias}: no such registered model or alias")
        return self._models[name][number - 1]

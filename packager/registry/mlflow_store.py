"""MLflow as the registry.

Each artifact becomes an MLflow pyfunc model (``pyfunc.py``, logged as code) whose ``predict``
runs the artifact's own loader, with the runtime's pip requirements only (``requirements.py``)
and a signature and input example per chain kind (``signature.py``). The order of a
registration is what keeps the registry honest when a job dies or a server fails half way:

1. upload the artifact into a run (a killed upload leaves a failed run, never a version);
2. register the version, tagged with its lineage and the sha256 of its manifest;
3. download the registry's copy and verify it against that manifest and tag;
4. tag the version ``packager.verified`` and point ``candidate`` at it.

A failure in 3 or 4 deletes the version. Promotion (``promote``) and downloads (``pull``) accept
verified versions whose files still match their hashes only.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from packager.errors import MissingDependencyError, PackagerError, RegistryError, UsageError
from packager.failpoints import failpoint
from packager.progress import step
from packager.publish import PARITY_FILE, README_FILE, new_stage, publish
from packager.registry.lineage import (
    ABANDONED_AFTER_S,
    BUILD_KEY_TAG,
    OWNER_TAG,
    VERIFIED_TAG,
    abandoned,
    build_key,
    git_tags,
    lineage_tags,
    owner,
    version_info,
)
from packager.registry.requirements import runtime_requirements
from packager.registry.signature import input_example, signature
from packager.registry.store import CANDIDATE_ALIAS, RegisteredVersion, VersionInfo
from packager.runtime.enums import ParityStatus
from packager.runtime.integrity import sha256_file, verify_artifact
from packager.runtime.manifest import MANIFEST_FILE, Manifest, read_manifest
from packager.runtime.registered import MANIFEST_SHA256_TAG, download_registered, resolve_version

log = logging.getLogger(__name__)

EXPERIMENT = "chain-packager"
PYFUNC_CODE = Path(__file__).with_name("pyfunc.py")
SETTLE_POLL_S = 1.0


def default_tracking_uri() -> str:
    """The embedded default: an SQLite MLflow store in the working directory."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


class MlflowStore:
    def __init__(self, tracking_uri: str | None = None) -> None:
        try:
            import mlflow  # noqa: F401
        except ImportError as e:
            raise MissingDependencyError("the registry needs mlflow: pip install 'chain-packager[build]'") from e
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
        self._client = MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)

    def ping(self) -> None:
        """Fail fast, before any export, when a tracking server does not answer at all."""
        if urlparse(self.tracking_uri).scheme not in ("http", "https"):
            return
        try:
            urllib.request.urlopen(f"{self.tracking_uri.rstrip('/')}/health", timeout=10).close()
        except urllib.error.HTTPError:
            return  # it answers; the real calls will say precisely what is wrong
        except (OSError, ValueError) as e:
            raise RegistryError(
                f"the MLflow tracking server at {self.tracking_uri} does not answer ({e}); start it, or fix "
                "--tracking-uri / MLFLOW_TRACKING_URI"
            ) from e

    # --- registering ---------------------------------------------------------------------------

    def register(self, artifact: Path, name: str, *, alias: str = CANDIDATE_ALIAS, force_new_version: bool = False,
                 figures: dict[str, float] | None = None) -> RegisteredVersion:
        """Register ``artifact`` (verified first) as a new version of ``name`` and point ``alias``
        (``candidate``) at it, or report the version an identical build already registered.
        ``figures`` are extra metrics for the run (build time, measured speed)."""
        manifest = read_manifest(artifact)
        verify_artifact(artifact, manifest)
        with self._errors(f"registering {artifact} as {name!r}", keep=artifact):
            key = build_key(manifest)
            if not force_new_version:
                existing = self._find_build(name, key)
                if existing is not None:
                    log.info("registry: %s is already registered as %s version %s (same build); "
                             "--force-new-version registers another", artifact.name, name, existing)
                    return RegisteredVersion(name=name, version=existing, alias=None,
                                             model_uri=f"models:/{name}/{existing}", tracking_uri=self.tracking_uri,
                                             existing=True)
            self.cleanup(name, quiet=True)
            return self._register(artifact, manifest, name, key, figures or {}, alias, force_new_version)

    def _register(self, artifact: Path, manifest: Manifest, name: str, key: str,
                  figures: dict[str, float], alias: str, force_new_version: bool) -> RegisteredVersion:
        import mlflow

        manifest_sha256 = sha256_file(artifact / MANIFEST_FILE)
        tags = {**lineage_tags(manifest), **git_tags(), BUILD_KEY_TAG: key, MANIFEST_SHA256_TAG: manifest_sha256,
                OWNER_TAG: owner()}
        metrics = {f"parity.{k}": v for k, v in manifest.parity.metrics.items()}
        metrics.update(figures)
        metrics["artifact.bytes"] = float(sum(d.size for d in manifest.files))
        # The whole registration under our tracking URI: MLflow resolves the logged model's
        # models:/m-... source through the process-wide one when it creates the version.
        with step(f"{artifact.name}: upload to {self.tracking_uri}, register and verify"), \
                _tracking_uri(self.tracking_uri):
            with mlflow.start_run(experiment_id=self._experiment_id(), run_name=artifact.name) as run:
                mlflow.set_tags(tags)
                mlflow.log_metrics(metrics)
                logged = mlflow.pyfunc.log_model(
                    name="model", python_model=str(PYFUNC_CODE), artifacts={"artifact": str(artifact)},
                    pip_requirements=runtime_requirements(manifest.format, manifest.requires),
                    signature=signature(manifest),
                    input_example=input_example(manifest), model_config={"manifest_sha256": manifest_sha256},
                )
                for report in (PARITY_FILE, README_FILE):
                    mlflow.log_artifact(str(artifact / report), artifact_path="reports")
                failpoint("registry.uploaded")
            created = self._create_version(name, logged, run.info.run_id, tags)
            try:
                failpoint("registry.registered")
                earlier = None if force_new_version else self._settle(name, key, created)
                if earlier is None:
                    self._verify_upload(name, created)
                    self._client.set_model_version_tag(name, created, VERIFIED_TAG, "true")
                    self._client.set_registered_model_alias(name, alias, created)
            except BaseException:
                self._delete_version(name, created)
                raise
        if earlier is not None:  # another job registered the same build first: ours goes
            self._delete_version(name, created)
            log.info("registry: %s was registered as %s version %s by another job at the same time", artifact.name,
                     name, earlier)
            return RegisteredVersion(name=name, version=earlier, alias=None, model_uri=f"models:/{name}/{earlier}",
                                     tracking_uri=self.tracking_uri, existing=True)
        log.info("registry: %s version %s, alias %s (run %s)", name, created, alias, run.info.run_id)
        return RegisteredVersion(name=name, version=created, alias=alias, run_id=run.info.run_id,
                                 model_uri=f"models:/{name}/{created}", tracking_uri=self.tracking_uri)

    def log_reports(self, registered: RegisteredVersion, reports: Path) -> None:
        """Add the build's reports (``packager.reports``) to the run of a version registered by
        it, under ``reports/``, once they are complete (they list the registration too)."""
        with self._errors(f"logging the reports {reports} with {registered.model_uri}"):
            for path in sorted(reports.iterdir()):
                self._client.log_artifact(registered.run_id, str(path), artifact_path="reports")
        log.info("registry: reports logged with %s", registered.model_uri)

    def _create_version(self, name: str, logged: Any, run_id: str, tags: dict[str, str]) -> str:
        from mlflow.exceptions import MlflowException

        try:
            self._client.create_registered_model(name)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":  # another job created it first: fine
                raise
        return str(self._client.create_model_version(name, logged.model_uri, run_id=run_id, tags=tags,
                                                     model_id=logged.model_id).version)

    def _delete_version(self, name: str, version: str) -> None:
        try:
            self._client.delete_model_version(name, version)
        except Exception as e:  # the registry went away: say what is left behind
            log.error("registry: could not delete the unverified version %s of %s (%s); it has no %s tag, "
                      "so it cannot be promoted or pulled; delete it by hand", version, name, e, VERIFIED_TAG)

    def _settle(self, name: str, key: str, created: str) -> str | None:
        """Two jobs registering the same build at once both create a version; the lower version
        number wins. Wait for every lower unverified version of this build to be verified (then
        it is the registered one: return it) or to go away; None when ours is the lowest."""
        while True:
            versions = self._client.search_model_versions(
                f"name = '{_quote(name)}' and tags.`{BUILD_KEY_TAG}` = '{key}'")
            lower = [v for v in versions if int(v.version) < int(created)]
            verified = [int(v.version) for v in lower if v.tags.get(VERIFIED_TAG) == "true"]
            if verified:
                return str(min(verified))
            if not any(not abandoned(v.tags.get(OWNER_TAG), v.creation_timestamp) for v in lower):
                return None
            time.sleep(SETTLE_POLL_S)

    def cleanup(self, name: str, *, older_than_s: float | None = None, quiet: bool = False) -> list[str]:
        """Remove what killed registrations left: versions of ``name`` never verified, and runs
        of ours still marked running, whose process is gone (same host) or that are older than
        ``older_than_s``. Returns what was done, one line each."""
        from mlflow.entities import RunStatus

        older_than_s = ABANDONED_AFTER_S if older_than_s is None else older_than_s
        done = []
        with self._errors(f"cleaning up after interrupted registrations of {name!r}"):
            for v in self._client.search_model_versions(f"name = '{_quote(name)}'"):
                if v.tags.get(VERIFIED_TAG) != "true" and abandoned(v.tags.get(OWNER_TAG), v.creation_timestamp,
                                                                     older_than_s):
                    self._client.delete_model_version(name, v.version)
                    done.append(f"deleted unverified version {v.version} of {name}")
            experiment = self._client.get_experiment_by_name(EXPERIMENT)
            runs = self._client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") \
                if experiment is not None else []
            for run in runs:
                if abandoned(run.data.tags.get(OWNER_TAG), run.info.start_time, older_than_s):
                    self._client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
                    done.append(f"marked run {run.info.run_id} ({run.info.run_name}) as failed")
        for line in done:
            (log.debug if quiet else log.info)("registry: %s", line)
        return done

    def _find_build(self, name: str, key: str) -> str | None:
        """The newest verified version of ``name`` with this build key, if any."""
        versions = self._client.search_model_versions(f"name = '{_quote(name)}' and tags.`{BUILD_KEY_TAG}` = '{key}'")
        verified = [int(v.version) for v in versions if v.tags.get(VERIFIED_TAG) == "true"]
        return str(max(verified)) if verified else None

    def _verify_upload(self, name: str, version: str) -> None:
        """Download what the registry now holds and check it byte for byte against its manifest."""
        with tempfile.TemporaryDirectory(prefix="packager-verify-") as tmp:
            download_registered(f"models:/{name}/{version}", tmp, tracking_uri=self.tracking_uri)

    def _experiment_id(self) -> str:
        experiment = self._client.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self._client.create_experiment(EXPERIMENT, artifact_location=self._artifact_location())
        except Exception:  # another process created it first
            experiment = self._client.get_experiment_by_name(EXPERIMENT)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _artifact_location(self) -> str | None:
        """Next to an SQLite database file; servers manage their own artifact store."""
        parsed = urlparse(self.tracking_uri)
        if parsed.scheme != "sqlite":
            return None
        database = Path(self.tracking_uri[len("sqlite:///"):])
        return (database.parent / "mlartifacts").resolve().as_uri()

    # --- promoting, pulling, listing -----------------------------------------------------------

    def promote(self, name: str, alias: str, *, version: str | None = None,
                from_alias: str | None = None) -> RegisteredVersion:
        """Point ``alias`` at a version (by number, or the one ``from_alias`` names now) after
        checking that its parity gate passed and that the registry's copy still matches."""
        if (version is None) == (from_alias is None):
            raise UsageError("promote: give exactly one of --version N and --from-alias ALIAS")
        uri = f"models:/{name}/{version}" if version is not None else f"models:/{name}@{from_alias}"
        with self._errors(f"promoting {uri} to @{alias}"):
            chosen = resolve_version(uri, self._client)
            number = str(chosen.version)
            if chosen.tags.get(VERIFIED_TAG) != "true":
                raise RegistryError(f"{name} version {number} was never verified after its upload (an interrupted "
                                    "or failed registration); register the artifact again")
            with tempfile.TemporaryDirectory(prefix="packager-promote-") as tmp:
                root = download_registered(f"models:/{name}/{number}", tmp, tracking_uri=self.tracking_uri)
                parity = read_manifest(root).parity
            if parity.status is not ParityStatus.PASSED:
                raise RegistryError(f"{name} version {number} did not pass its parity gate ({parity.status.value}: "
                                    f"{'; '.join(parity.failures[:3])}); it cannot be promoted")
            self._client.set_registered_model_alias(name, alias, number)
        log.info("registry: %s version %s is now @%s", name, number, alias)
        return RegisteredVersion(name=name, version=number, alias=alias, model_uri=f"models:/{name}@{alias}",
                                 tracking_uri=self.tracking_uri)

    def pull(self, uri: str, out: Path) -> Path:
        """Download a registered version into ``out/<artifact name>``, verified, atomically."""
        with self._errors(f"pulling {uri}"):
            stage = new_stage(out, "pull")  # removed by the next pull or build if this process is killed
            try:
                root = download_registered(uri, stage, tracking_uri=self.tracking_uri)
                failpoint("registry.downloaded")
                manifest = read_manifest(root)
                target = out / manifest.name
                publish(root, target, manifest)
            finally:
                shutil.rmtree(stage, ignore_errors=True)
        log.info("registry: pulled %s into %s", uri, target)
        return target

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of ``name``, newest first."""
        from mlflow.exceptions import MlflowException

        with self._errors(f"listing {name!r}"):
            try:
                model = self._client.get_registered_model(name)
            except MlflowException as e:
                if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                    raise RegistryError(f"{self.tracking_uri} has no registered model named {name!r}") from e
                raise
            aliases: dict[str, list[str]] = {}
            for alias, number in (model.aliases or {}).items():
                aliases.setdefault(str(number), []).append(alias)
            found = self._client.search_model_versions(f"name = '{_quote(name)}'")
        return [version_info(str(v.version), tuple(sorted(aliases.get(str(v.version), []))),
                             created=int(v.creation_timestamp or 0), tags=dict(v.tags))
                for v in sorted(found, key=lambda v: -int(v.version))]

    @contextmanager
    def _errors(self, doing: str, *, keep: Path | None = None) -> Iterator[None]:
        """Our own errors pass; anything else from mlflow or the network becomes a RegistryError
        with the cause in one line, and says what to do."""
        try:
            yield
        except PackagerError:
            raise
        except Exception as e:
            raise RegistryError(f"{doing} in {self.tracking_uri} failed: {_cause(e)}"
                                + (f". The artifact is kept at {keep}; register it later with `packager register "
                                   f"{keep} --name NAME`" if keep else "")) from e


def _cause(error: Exception) -> str:
    """One line: what went wrong, and for an authentication failure what to set."""
    code = getattr(error, "error_code", "")
    status = getattr(error, "get_http_status_code", lambda: None)()
    if code in ("UNAUTHENTICATED", "PERMISSION_DENIED") or status in (401, 403):
        return ("the tracking server refused our credentials (HTTP " + str(status or code) + "); set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN")
    message = getattr(error, "message", None) or str(error)
    return f"{type(error).__name__}: {message.strip().splitlines()[0] if message.strip() else ''}"


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (runs, log_model) reads a process-wide tracking URI and exports it to
    the environment; set it for the duration of one registration and put the caller's back."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    previous, variable = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        # Not set_tracking_uri(previous): for None (nothing set) it would also delete the caller's
        # MLFLOW_TRACKING_URI from the environment.
        utils._tracking_uri = previous
        if variable is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = variable

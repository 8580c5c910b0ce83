"""The packaging spec: one TOML file that describes a release, read as the build's flags.

``packager build --spec packaging.toml`` reads the source, formats, precisions, validation and
calibration data, gates, registry and reports from the file; a flag given on the command line
overrides its key. The file is checked against ``schemas/packaging.schema.json`` (shipped with
the package) and then for what a schema cannot say (one of path and id, files that exist), and
every problem is reported at once, with its key, before any work starts.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

from packager.errors import UsageError
from packager.runtime.files import read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SCHEMA_FILE = Path(__file__).parent.parent / "schemas" / "packaging.schema.json"
SPEC_LIMIT = 1 << 20  # a spec is a page of TOML


class SpecError(UsageError):
    """The spec file cannot be read or does not describe a build (exit 2)."""


@cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def read_spec(path: Path) -> dict[str, Any]:
    """The build flags ``path`` sets, as argparse destinations and values (relative paths made
    relative to the spec's folder). Raises SpecError naming every bad key."""
    try:
        data = tomllib.loads(read_text(path, limit=SPEC_LIMIT, error=SpecError))
    except FileNotFoundError:
        raise SpecError(f"--spec {path}: cannot read it (no such file)") from None
    except (tomllib.TOMLDecodeError, RecursionError, ValueError) as e:  # ValueError: a 5000-digit integer
        raise SpecError(f"--spec {path}: not valid TOML: {type(e).__name__}: {str(e)[:200]}") from None
    try:
        problems = schema_problems(data) or _meaning_problems(data, path.parent)
    except RecursionError:
        raise SpecError(f"--spec {path}: nested too deeply to be a packaging spec") from None
    if problems:
        raise SpecError(f"--spec {path} is invalid; nothing was built:\n" + "\n".join(f"  {p}" for p in problems))
    return _flags(data, path.parent)


def schema_problems(data: Any) -> list[str]:
    """Every place ``data`` breaks the schema, as "key.path: reason", in document order."""
    from jsonschema import Draft202012Validator

    problems = []
    for error in sorted(Draft202012Validator(schema()).iter_errors(data), key=lambda e: list(map(str, e.path))):
        key = _key(error.absolute_path)
        if error.validator == "additionalProperties":
            allowed = error.schema.get("properties", {})
            for unknown in sorted(k for k in error.instance if k not in allowed):
                problems.append(f"{_key([*error.absolute_path, unknown])}: unknown key; expected one of "
                                f"{', '.join(allowed)}")
        elif "propertyNames" in error.absolute_schema_path:  # a key of a table of metrics
            problems.append(f"{_key([*error.absolute_path, error.instance])}: unknown metric; expected one of "
                            f"{', '.join(error.validator_value)}")
        else:
            problems.append(f"{key or '(top level)'}: {error.message}")
    return problems


def _key(path: Any) -> str:
    key = ""
    for part in path:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
    return key


def _meaning_problems(data: dict[str, Any], base: Path) -> list[str]:
    source, build = data["source"], data.get("build", {})
    problems = []
    if ("path" in source) == ("id" in source):
        problems.append("source: give exactly one of path (a folder) and id (a cached model id)")
    if "revision" in source and "id" not in source:
        problems.append("source.revision: only a model id has revisions")
    if "path" in source and not _exists(base / source["path"], Path.is_dir):
        problems.append(f"source.path: no such folder: {base / source['path']}")
    precisions = build.get("precisions", [])
    if "auto" in precisions and (len(precisions) > 1 or "recipe" in build):
        problems.append("build.precisions: \"auto\" picks the recipe itself; give it alone and no build.recipe")
    for table in ("validation", "calibration"):
        file = data.get(table, {}).get("data")
        if file is not None and not _exists(base / file, Path.is_file):
            problems.append(f"{table}.data: no such file: {base / file}")
    return problems


def _exists(path: Path, kind: Any) -> bool:
    try:
        return bool(kind(path))
    except (OSError, ValueError):  # a name too long for the system, a NUL byte
        return False


def _flags(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """The spec as argparse destinations of ``packager build``."""
    source, build = data["source"], data.get("build", {})
    registry, validation = data.get("registry", {}), data.get("validation", {})
    flags: dict[str, Any] = {"source": str(base / source["path"]) if "path" in source else source["id"]}
    copy = {"revision": source, "trust_remote_code": source, "allow_pickle": source, "recipe": build,
            "name": build, "token_embeddings": build, "allow_parity_failure": build, "alias": registry,
            "tracking_uri": registry, "force_new_version": registry}
    flags.update({dest: table[dest] for dest, table in copy.items() if dest in table})
    if "formats" in build:
        flags["format"] = ",".join(build["formats"])
    if "precisions" in build:
        flags["precision"] = ",".join(build["precisions"])
    if "name" in registry:
        flags["register"] = registry["name"]
    paths = {"out": build.get("out"), "validation_data": validation.get("data"),
             "calibration_data": data.get("calibration", {}).get("data"), "reports": data.get("reports", {}).get("dir")}
    flags.update({dest: base / value for dest, value in paths.items() if value is not None})
    flags["gate"] = [f"{precision}.{metric}={value}" for precision, gate in validation.get("gates", {}).items()
                     for metric, value in gate.items()]
    return flags

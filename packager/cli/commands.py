"""One handler per command: turn the parsed arguments into a library call and print its result.
The registry's and the build's own errors carry their exit codes up to ``packager.cli.main``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from packager.cli.output import parity_line, registered_line, versions_table
from packager.errors import ParityError, UsageError
from packager.registry import open_store
from packager.registry.store import Store
from packager.reports import write_json
from packager.runtime.enums import Format, Precision
from packager.runtime.manifest import MANIFEST_FILE


def build(args: argparse.Namespace) -> int:
    from packager.builder.options import BuildOptions
    from packager.builder.pipeline import build

    if args.source is None:
        raise UsageError("packager build: give SOURCE, or --spec with a [source] table")
    auto = args.precision.strip().lower() == "auto"
    options = BuildOptions(
        formats=_enum_list(Format, args.format, "--format"),
        precisions=() if auto else _enum_list(Precision, args.precision, "--precision"), auto=auto,
        recipe=args.recipe, calibration_data=args.calibration_data, gates=_gates(args.gate),
        out=args.out, name=args.name, revision=args.revision, register=args.register, alias=args.alias,
        tracking_uri=args.tracking_uri, force_new_version=args.force_new_version, reports=args.reports,
        validation_data=args.validation_data, token_embeddings=args.token_embeddings,
        allow_parity_failure=args.allow_parity_failure, trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
    )
    result = build(args.source, options)
    for variant in result.variants:
        registered = f", {registered_line(variant.registered)}" if variant.registered else ""
        print(f"{variant.artifact} ({variant.recipe}): {parity_line(variant.parity)}, built in {variant.seconds:.1f} s"
              f"{registered}")
        for attempt in variant.attempts:
            print(f"  auto: {attempt['recipe']}: {attempt['outcome']}")
    print(f"reports: {result.reports}/report.html (and report.json, report.md)")
    return 0


def inspect(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if os.path.lexists(path / MANIFEST_FILE):  # whatever it is: describe_artifact says what is wrong with it
        from packager.reports.artifact import describe_artifact

        info, text = describe_artifact(path)
    else:
        from packager.chain.describe import describe_source

        info, text = describe_source(args.path, trust_remote_code=args.trust_remote_code,
                                     allow_pickle=args.allow_pickle)
    print(json.dumps(info, indent=2, sort_keys=True, ensure_ascii=False) if args.json else text)
    return 0


def validate(args: argparse.Namespace) -> int:
    from packager.builder.validate import validate

    _check_report_path(args.report)
    report = validate(args.artifact, args.reference, validation_data=args.validation_data,
                      trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle)
    print(report.describe())
    _write_report(args.report, {"status": "ok" if report.passed else "failed", "parity": report.to_dict(),
                                "exit_code": 0 if report.passed else ParityError.exit_code})
    return 0 if report.passed else ParityError.exit_code


def register(args: argparse.Namespace) -> int:
    registered = _store(args.tracking_uri).register(args.artifact, args.name, alias=args.alias,
                                                    force_new_version=args.force_new_version)
    print(f"{args.artifact}: {registered_line(registered)} in {registered.tracking_uri}")
    return 0


def promote(args: argparse.Namespace) -> int:
    promoted = _store(args.tracking_uri).promote(args.name, args.alias, version=args.version,
                                                 from_alias=args.from_alias)
    print(f"{promoted.name} version {promoted.version} is now @{promoted.alias} (verified, parity passed)")
    return 0


def pull(args: argparse.Namespace) -> int:
    print(f"{args.uri}: verified and written to {_store(args.tracking_uri).pull(args.uri, args.out)}")
    return 0


def cleanup(args: argparse.Namespace) -> int:
    if args.older_than is not None and args.older_than < 0:
        raise UsageError("--older-than must be zero or more seconds")
    done = _store(args.tracking_uri).cleanup(args.name, older_than_s=args.older_than)
    print("\n".join(done) if done else f"{args.name}: nothing to clean up")
    return 0


def list_versions(args: argparse.Namespace) -> int:
    versions = _store(args.tracking_uri).versions(args.name)
    if args.json:
        print(json.dumps([v.to_dict() for v in versions], indent=2, sort_keys=True))
    else:
        print(versions_table(versions))
    return 0


def bench(args: argparse.Namespace) -> int:
    from packager.bench.host import describe_host
    from packager.bench.run import Settings, bench, table

    settings = Settings(threads=args.threads, batch_size=args.batch_size, rounds=args.rounds)
    rows = bench(args.artifacts, reference=args.reference, inputs=args.texts, settings=settings,
                 trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle)
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    print(table(rows))
    count = rows[0]["inputs"]
    print(f"\n{count} inputs, batches of {settings.batch_size}, {settings.threads} threads; throughput and cold start: "
          f"median of {settings.rounds}; latency: batch 1 over {min(count, settings.latency_inputs)} inputs")
    print(describe_host().summary())  # figures from another CPU are not comparable
    return 0


def write_failure(args: argparse.Namespace, error: Exception, code: int) -> None:
    """The --report of a command that failed (validate), with the cause; a report that cannot be
    written then only warns."""
    report: dict[str, Any] = {"status": "failed", "exit_code": code,
                              "error": {"type": type(error).__name__, "message": str(error)}}
    if isinstance(error, ParityError):
        report["parity"] = error.report.to_dict()
    _write_report(getattr(args, "report", None), report, failing=True)


def _store(tracking_uri: str | None) -> Store:
    """The registry, checked to answer before any work."""
    store = open_store(tracking_uri)
    store.ping()
    return store


def _gates(items: list[str]) -> dict[tuple[Precision, str], float]:
    gates = {}
    for item in items:
        key, _, value = item.partition("=")
        precision, _, metric = key.partition(".")
        try:
            gates[(Precision(precision.strip().lower()), metric.strip())] = float(value)
        except ValueError:
            raise UsageError(f"--gate {item!r}: expected PRECISION.METRIC=NUMBER, e.g. int8.mean_cosine=0.99") from None
    return gates


def _enum_list(enum: Any, text: str, option: str) -> tuple[Any, ...]:
    values = []
    for item in (part.strip().lower() for part in text.split(",")):
        try:
            values.append(enum(item))
        except ValueError:
            choices = ", ".join(e.value for e in enum)
            raise UsageError(f"{option}: unknown value {item!r}; choose from {choices}") from None
    return tuple(dict.fromkeys(values))


def _check_report_path(path: Path | None) -> None:
    """Refuse an unusable --report path before any work, not after a long build."""
    if path is not None and (path.is_dir() or (path.parent.exists() and not os.access(path.parent, os.W_OK))):
        raise UsageError(f"--report {path}: not a writable file path")


def _write_report(path: Path | None, data: dict[str, Any], *, failing: bool = False) -> None:
    """Write the report; a report that cannot be written fails a successful run (CI reads it),
    and only warns when the run already failed for another reason."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, data)
    except OSError as e:
        if not failing:
            raise UsageError(f"cannot write the report to {path}: {e}") from e
        print(f"packager: warning: cannot write the report to {path}: {e}", file=sys.stderr)

"""The ``packager`` command: parse, call the library, map errors to exit codes.

Exit codes come from the exception classes (see ``packager.errors``); 0 means every requested
step succeeded. Expected errors print one line of cause and what to do, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from packager import progress
from packager.artifact import write_json
from packager.errors import ParityError, UsageError
from packager.registry import CANDIDATE_ALIAS, RegisteredVersion
from packager.runtime.manifest import MANIFEST_FILE, Format, Precision
from packager.validators.report import ParityReport, lower_is_better

log = logging.getLogger("packager")
_NOISY = ("transformers", "sentence_transformers", "mlflow", "alembic", "urllib3", "httpx", "torch", "onnxscript",
          "huggingface_hub", "filelock")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(args.verbose - args.quiet)
    # A build must never reach a model hub: sources are folders or already-cached model ids.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        if getattr(args, "spec", None) is not None:  # the spec's keys become the defaults flags override
            from packager.spec import read_spec

            args = _parser(read_spec(args.spec)).parse_args(argv)
        try:
            return args.run(args)
        finally:
            progress.stop()  # before the error line, so it prints below the bars
    except KeyboardInterrupt:
        print("packager: interrupted; nothing half-written was published", file=sys.stderr)
        return 130
    except Exception as e:
        # Our errors, and the same classes as defined by an artifact's own copy of the runtime
        # (its loader runs in the parity gate), carry their exit code; anything else is a bug.
        code = getattr(e, "exit_code", None)
        if not isinstance(code, int):
            raise
        print(f"packager: error: {e}", file=sys.stderr)
        _write_report(getattr(args, "report", None), _failure(e, code), failing=True)
        return code


def _parser(spec: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    """The command line; ``spec`` (from ``packager.spec.read_spec``) sets the build's defaults."""
    parser = argparse.ArgumentParser(prog="packager", allow_abbrev=False, description=__doc__.splitlines()[0])
    _add_verbosity(parser, default=0)
    # The same flags after the command name; SUPPRESS keeps them from resetting the top-level count.
    common = argparse.ArgumentParser(add_help=False)
    _add_verbosity(common, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", allow_abbrev=False, parents=[common],
                                help="export, validate and optionally register a saved chain")
    build.add_argument("source", nargs="?", type=_checked_text,
                       help="a folder with modules.json, or a model id in the local Hugging Face cache (or [source] "
                       "in --spec)")
    build.add_argument("--spec", type=_path, help="a packaging spec (TOML) with the build's settings; flags override it")
    build.add_argument("--format", default="onnx", help="comma-separated: " + ",".join(f.value for f in Format))
    build.add_argument("--precision", default="fp32",
                       help="comma-separated: " + ",".join(p.value for p in Precision) + "; or auto: the fastest int8 "
                       "recipe that passes its gate, else fp32")
    build.add_argument("--recipe", help="a named recipe instead of the default for its format and precision")
    build.add_argument("--calibration-data", type=_path,
                       help="texts (or pairs) for int8 calibration, in the --validation-data formats "
                       "(default: a built-in mix of real text)")
    build.add_argument("--gate", action="append", default=[], metavar="PRECISION.METRIC=VALUE",
                       help="override a gate threshold, e.g. int8.mean_cosine=0.99 (repeatable)")
    build.add_argument("--out", type=_path, default=Path("dist"), help="directory for artifacts (default: dist)")
    build.add_argument("--name", help="artifact name (default: the source folder or model name)")
    build.add_argument("--revision", help="revision of a cached Hugging Face model id")
    build.add_argument("--register", metavar="MODEL_NAME", help="register each artifact under this registry name")
    build.add_argument("--no-register", dest="register", action="store_const", const=None,
                       help="do not register (when --spec names a registry)")
    _add_registry_options(build)
    _add_validation_options(build)
    build.add_argument("--token-embeddings", action=argparse.BooleanOptionalAction, default=False,
                       help="also export token_embeddings")
    build.add_argument("--allow-parity-failure", action=argparse.BooleanOptionalAction, default=False,
                       help="publish and register even if the parity gate fails (recorded in the manifest)")
    build.add_argument("--reports", type=_path, metavar="DIR",
                       help="where report.json, report.md and report.html go (default: OUT/NAME-report)")
    build.set_defaults(run=_build, **(spec or {}))

    inspect = commands.add_parser("inspect", allow_abbrev=False, parents=[common],
                                  help="describe a saved chain or a built artifact")
    inspect.add_argument("path", type=_checked_text, help="a saved chain (folder or cached model id) or an artifact directory")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    _add_source_options(inspect)
    inspect.set_defaults(run=_inspect)

    validate = commands.add_parser("validate", allow_abbrev=False, parents=[common],
                                   help="re-run the parity gate of an artifact against its reference")
    validate.add_argument("artifact", type=_path)
    validate.add_argument("--reference", required=True, type=_checked_text, help="the saved chain the artifact was built from")
    _add_validation_options(validate)
    validate.add_argument("--report", type=_path, help="write the parity report (JSON) here")
    validate.set_defaults(run=_validate)

    register = commands.add_parser("register", allow_abbrev=False, parents=[common],
                                   help="register an artifact built earlier (its hashes are verified first)")
    register.add_argument("artifact", type=_path)
    register.add_argument("--name", required=True, help="the registered model name")
    _add_registry_options(register)
    register.set_defaults(run=_register)

    promote = commands.add_parser("promote", allow_abbrev=False, parents=[common],
                                  help="point an alias at a verified version that passed its parity gate")
    promote.add_argument("name", help="the registered model name")
    which = promote.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", help="the version number to promote")
    which.add_argument("--from-alias", help="promote the version this alias points at now, e.g. candidate")
    promote.add_argument("--alias", required=True, help="the alias to set, e.g. champion")
    _add_tracking_uri(promote)
    promote.set_defaults(run=_promote)

    pull = commands.add_parser("pull", allow_abbrev=False, parents=[common],
                               help="download a registered artifact and verify its hashes")
    pull.add_argument("uri", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    pull.add_argument("--out", type=_path, default=Path("dist"), help="directory to put the artifact in (default: dist)")
    _add_tracking_uri(pull)
    pull.set_defaults(run=_pull)

    cleanup = commands.add_parser("cleanup", allow_abbrev=False, parents=[common],
                                  help="remove what interrupted registrations left: unverified versions, running runs")
    cleanup.add_argument("name", help="the registered model name")
    cleanup.add_argument("--older-than", type=float, default=None, metavar="SECONDS",
                         help="take those of other machines once this old (default: 1800); those of processes of "
                         "this machine go as soon as the process is gone, never while it runs")
    _add_tracking_uri(cleanup)
    cleanup.set_defaults(run=_cleanup)

    listing = commands.add_parser("list", allow_abbrev=False, parents=[common],
                                  help="the registered versions of a model")
    listing.add_argument("name", help="the registered model name")
    listing.add_argument("--json", action="store_true", help="print JSON")
    _add_tracking_uri(listing)
    listing.set_defaults(run=_list)

    from packager.bench import DEFAULT_TEXTS, Settings  # their defaults are the options' defaults

    defaults = Settings()
    bench = commands.add_parser("bench", allow_abbrev=False, parents=[common],
                                help="throughput, latency, cold start and memory of artifacts, on this machine")
    bench.add_argument("artifacts", type=_path, nargs="+", metavar="ARTIFACT",
                       help="artifact directories, of one chain kind")
    bench.add_argument("--reference", metavar="SOURCE", type=_checked_text,
                       help="also measure this saved chain in sentence-transformers (torch) and compare with it")
    bench.add_argument("--texts", type=_path, help="inputs in the --validation-data formats, pairs for cross-encoders "
                       f"(default: {DEFAULT_TEXTS} real sentences; for cross-encoders, the built-in calibration pairs)")
    bench.add_argument("--threads", type=int, default=defaults.threads,
                       help=f"intra-op threads (default: {defaults.threads})")
    bench.add_argument("--batch-size", type=int, default=defaults.batch_size,
                       help=f"batch size for throughput (default: {defaults.batch_size})")
    bench.add_argument("--rounds", type=int, default=defaults.rounds,
                       help=f"throughput passes and cold-start processes, their median is reported (default: "
                       f"{defaults.rounds})")
    bench.add_argument("--json", action="store_true", help="print the rows as JSON")
    _add_source_options(bench)
    bench.set_defaults(run=_bench)
    return parser


# What Linux accepts: longer names fail every call with ENAMETOOLONG.
_PATH_MAX, _NAME_MAX = 4096, 255


def _checked_text(value: str) -> str:
    """A path or model id as given: refused here if no system call could take it."""
    problem = ("has a NUL byte" if "\0" in value else f"is over {_PATH_MAX} bytes"
               if len(os.fsencode(value)) >= _PATH_MAX else None)
    long_part = next((part for part in value.split("/") if len(os.fsencode(part)) > _NAME_MAX), None)
    if problem is None and long_part is not None:
        problem = f"has a component over {_NAME_MAX} bytes ({long_part[:40]}...)"
    if problem:
        raise argparse.ArgumentTypeError(f"{value[:60]!r}{'...' if len(value) > 60 else ''} {problem}")
    return value


def _path(value: str) -> Path:
    return Path(_checked_text(value))


def _add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")


def _add_registry_options(parser: argparse.ArgumentParser) -> None:
    _add_tracking_uri(parser)
    parser.add_argument("--force-new-version", action=argparse.BooleanOptionalAction, default=False,
                        help="register a new version even if an identical build is already registered")
    parser.add_argument("--alias", default=CANDIDATE_ALIAS,
                        help=f"the alias each new verified version gets (default: {CANDIDATE_ALIAS})")


def _add_verbosity(parser: argparse.ArgumentParser, *, default: Any) -> None:
    parser.add_argument("-q", "--quiet", action="count", default=default, help="less output (warnings and errors only)")
    parser.add_argument("-v", "--verbose", action="count", default=default, help="more output")


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-remote-code", action=argparse.BooleanOptionalAction, default=False,
                        help="allow module types outside sentence-transformers' own (runs code from the folder)")
    parser.add_argument("--allow-pickle", action=argparse.BooleanOptionalAction, default=False,
                        help="allow pickle weights (*.bin, *.pt)")


def _add_validation_options(parser: argparse.ArgumentParser) -> None:
    _add_source_options(parser)
    parser.add_argument("--validation-data", type=_path,
                        help="extra parity texts: one per line, or JSON Lines (.jsonl) of strings or {\"text\": ...}")


def _build(args: argparse.Namespace) -> int:
    from packager.build import BuildOptions, build

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
        registered = f", {_registered_line(variant.registered)}" if variant.registered else ""
        print(f"{variant.artifact} ({variant.recipe}): {_parity_line(variant.parity)}, built in {variant.seconds:.1f} s"
              f"{registered}")
        for attempt in variant.attempts:
            print(f"  auto: {attempt['recipe']}: {attempt['outcome']}")
    print(f"reports: {result.reports}/report.html (and report.json, report.md)")
    return 0


def _registered_line(registered: RegisteredVersion) -> str:
    if registered.existing:
        return (f"already registered as {registered.model_uri} (an identical build; --force-new-version registers "
                "another)")
    return f"registered {registered.model_uri} @{registered.alias}"


def _store(tracking_uri: str | None) -> Any:
    """The registry, checked to answer before any work."""
    from packager.registry import open_store

    store = open_store(tracking_uri)
    store.ping()
    return store


def _register(args: argparse.Namespace) -> int:
    store = _store(args.tracking_uri)
    registered = store.register(args.artifact, args.name, alias=args.alias, force_new_version=args.force_new_version)
    print(f"{args.artifact}: {_registered_line(registered)} in {registered.tracking_uri}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    store = _store(args.tracking_uri)
    promoted = store.promote(args.name, args.alias, version=args.version, from_alias=args.from_alias)
    print(f"{promoted.name} version {promoted.version} is now @{promoted.alias} (verified, parity passed)")
    return 0


def _pull(args: argparse.Namespace) -> int:
    store = _store(args.tracking_uri)
    print(f"{args.uri}: verified and written to {store.pull(args.uri, args.out)}")
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    from packager.registry.mlflow_store import ABANDONED_AFTER_S

    if args.older_than is not None and args.older_than < 0:
        raise UsageError("--older-than must be zero or more seconds")
    store = _store(args.tracking_uri)
    done = store.cleanup(args.name, older_than_s=ABANDONED_AFTER_S if args.older_than is None else args.older_than)
    print("\n".join(done) if done else f"{args.name}: nothing to clean up")
    return 0


_LIST_METRICS = ("min_cosine", "mean_cosine", "spearman_min", "top10_overlap_mean", "max_rel_diff")


def _list(args: argparse.Namespace) -> int:
    store = _store(args.tracking_uri)
    versions = store.versions(args.name)
    if args.json:
        print(json.dumps([v.to_dict() for v in versions], indent=2, sort_keys=True))
        return 0
    rows = [("version", "aliases", "format", "precision", "recipe", "parity", "source", "verified")]
    for v in versions:
        t = v.tags
        figures = []
        for metric in _LIST_METRICS:  # the worst value over the verbs, as in the build's output
            values = [float(v) for k, v in t.items() if k.startswith("packager.parity.") and k.endswith("." + metric)]
            if values:
                figures.append(f"{metric} {(max if lower_is_better(metric) else min)(values):.6g}")
        figures = figures[:2]
        source = t.get("packager.source.location", "?") + "@" + t.get("packager.source.sha256", "")[:12]
        rows.append((v.version, ",".join(v.aliases) or "-", t.get("packager.format", "?"),
                     t.get("packager.precision", "?"), t.get("packager.recipe", "?"),
                     " ".join([t.get("packager.parity.status", "?"), *figures]), source,
                     "yes" if v.verified else "NO"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _bench(args: argparse.Namespace) -> int:
    from packager.bench import Settings, bench, table

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
    return 0


def _parity_line(report: ParityReport) -> str:
    """The worst value of each gated metric over the verbs, e.g. "min_cosine 0.9999999999"."""
    if not report.passed:
        return "parity FAILED, published anyway (--allow-parity-failure): " + "; ".join(report.failures)
    worst: dict[str, float] = {}
    for check in report.checks:
        metric = check.metric.rpartition(".")[2]
        pick = max if lower_is_better(check.metric) else min
        worst[metric] = pick(worst.get(metric, check.value), check.value)
    return "parity passed (" + ", ".join(f"{metric} {value:.10g}" for metric, value in worst.items()) + ")"


def _inspect(args: argparse.Namespace) -> int:
    from packager.describe import describe_artifact, describe_source

    path = Path(args.path)
    if os.path.lexists(path / MANIFEST_FILE):  # whatever it is: describe_artifact says what is wrong with it
        info, text = describe_artifact(path)
    else:
        info, text = describe_source(args.path, trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle)
    print(json.dumps(info, indent=2, sort_keys=True, ensure_ascii=False) if args.json else text)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from packager.build import validate

    _check_report_path(args.report)
    report = validate(args.artifact, args.reference, validation_data=args.validation_data,
                      trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle)
    print(report.describe())
    _write_report(args.report, {"status": "ok" if report.passed else "failed", "parity": report.to_dict(),
                                "exit_code": 0 if report.passed else ParityError.exit_code})
    return 0 if report.passed else ParityError.exit_code


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
            raise UsageError(f"{option}: unknown value {item!r}; choose from {', '.join(e.value for e in enum)}") from None
    return tuple(dict.fromkeys(values))


def _failure(error: Exception, code: int) -> dict[str, Any]:
    report = {"status": "failed", "exit_code": code, "error": {"type": type(error).__name__, "message": str(error)}}
    if isinstance(error, ParityError):
        report["parity"] = error.report.to_dict()
    return report


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


def _configure_logging(verbosity: int) -> None:
    """Log lines on stderr (warnings and errors only with --quiet, debug with --verbose); on a
    terminal, progress bars with the log lines above them."""
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    progress.stop()
    if verbosity >= 0 and sys.stderr.isatty():
        handler = progress.use_terminal(sys.stderr)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("packager: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbosity > 1 else logging.ERROR)
    if verbosity <= 1:  # read by those libraries when they are imported, after this
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        if "transformers" in sys.modules:  # imported before main() ran (a test, a notebook): too late for
            sys.modules["transformers"].utils.logging.disable_progress_bar()  # the variables, so tell it


if __name__ == "__main__":
    sys.exit(main())

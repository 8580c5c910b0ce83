"""The command line's grammar: one sub-parser per command, each naming the handler in
``packager.cli.commands`` that runs it. Every value is checked here for what no system call could
take (a NUL byte, an over-long name); the library checks the rest."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from packager.cli import commands
from packager.registry.store import CANDIDATE_ALIAS
from packager.runtime.enums import Format, Precision

DESCRIPTION = "Package sentence-transformers module chains as verified whole-chain artifacts."
# What Linux accepts: longer names fail every call with ENAMETOOLONG.
_PATH_MAX, _NAME_MAX = 4096, 255


def parser(spec: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    """The command line; ``spec`` (from ``packager.builder.packaging_toml.read_spec``) sets the build's defaults."""
    top = argparse.ArgumentParser(prog="packager", allow_abbrev=False, description=DESCRIPTION)
    _add_verbosity(top, default=0)
    # The same flags after the command name; SUPPRESS keeps them from resetting the top-level count.
    common = argparse.ArgumentParser(add_help=False)
    _add_verbosity(common, default=argparse.SUPPRESS)
    subparsers = top.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return subparsers.add_parser(name, allow_abbrev=False, parents=[common], help=help)

    _build(add("build", "export, validate and optionally register a saved chain"), spec)
    _inspect(add("inspect", "describe a saved chain or a built artifact"))
    _validate(add("validate", "re-run the parity gate of an artifact against its reference"))
    _register(add("register", "register an artifact built earlier (its hashes are verified first)"))
    _promote(add("promote", "point an alias at a verified version that passed its parity gate"))
    _pull(add("pull", "download a registered artifact and verify its hashes"))
    _cleanup(add("cleanup", "remove what interrupted registrations left: unverified versions, running runs"))
    _list(add("list", "the registered versions of a model"))
    _bench(add("bench", "throughput, latency, cold start and memory of artifacts, on this machine"))
    return top


def _build(build: argparse.ArgumentParser, spec: dict[str, Any] | None) -> None:
    build.add_argument("source", nargs="?", type=checked_text,
                       help="a folder with modules.json, or a model id in the local Hugging Face cache (or [source] "
                       "in --spec)")
    build.add_argument("--spec", type=path, help="a packaging spec (TOML) with the build's settings; flags override it")
    build.add_argument("--format", default="onnx", help="comma-separated: " + ",".join(f.value for f in Format))
    build.add_argument("--precision", default="fp32",
                       help="comma-separated: " + ",".join(p.value for p in Precision) + "; or auto: the fastest int8 "
                       "recipe that passes its gate, else fp32")
    build.add_argument("--recipe", help="a named recipe instead of the default for its format and precision")
    build.add_argument("--calibration-data", type=path,
                       help="texts (or pairs) for int8 calibration, in the --validation-data formats "
                       "(default: a built-in mix of real text)")
    build.add_argument("--gate", action="append", default=[], metavar="PRECISION.METRIC=VALUE",
                       help="override a gate threshold, e.g. int8.mean_cosine=0.99 (repeatable)")
    build.add_argument("--out", type=path, default=Path("dist"), help="directory for artifacts (default: dist)")
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
    build.add_argument("--reports", type=path, metavar="DIR",
                       help="where report.json, report.md and report.html go (default: OUT/NAME-report)")
    build.set_defaults(run=commands.build, **(spec or {}))


def _inspect(inspect: argparse.ArgumentParser) -> None:
    inspect.add_argument("path", type=checked_text,
                         help="a saved chain (folder or cached model id) or an artifact directory")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    _add_source_options(inspect)
    inspect.set_defaults(run=commands.inspect)


def _validate(validate: argparse.ArgumentParser) -> None:
    validate.add_argument("artifact", type=path)
    validate.add_argument("--reference", required=True, type=checked_text,
                          help="the saved chain the artifact was built from")
    _add_validation_options(validate)
    validate.add_argument("--report", type=path, help="write the parity report (JSON) here")
    validate.set_defaults(run=commands.validate)


def _register(register: argparse.ArgumentParser) -> None:
    register.add_argument("artifact", type=path)
    register.add_argument("--name", required=True, help="the registered model name")
    _add_registry_options(register)
    register.set_defaults(run=commands.register)


def _promote(promote: argparse.ArgumentParser) -> None:
    promote.add_argument("name", help="the registered model name")
    which = promote.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", help="the version number to promote")
    which.add_argument("--from-alias", help="promote the version this alias points at now, e.g. candidate")
    promote.add_argument("--alias", required=True, help="the alias to set, e.g. champion")
    _add_tracking_uri(promote)
    promote.set_defaults(run=commands.promote)


def _pull(pull: argparse.ArgumentParser) -> None:
    pull.add_argument("uri", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    pull.add_argument("--out", type=path, default=Path("dist"), help="directory to put the artifact in (default: dist)")
    _add_tracking_uri(pull)
    pull.set_defaults(run=commands.pull)


def _cleanup(cleanup: argparse.ArgumentParser) -> None:
    cleanup.add_argument("name", help="the registered model name")
    cleanup.add_argument("--older-than", type=float, default=None, metavar="SECONDS",
                         help="take those of other machines once this old (default: 1800); those of processes of "
                         "this machine go as soon as the process is gone, never while it runs")
    _add_tracking_uri(cleanup)
    cleanup.set_defaults(run=commands.cleanup)


def _list(listing: argparse.ArgumentParser) -> None:
    listing.add_argument("name", help="the registered model name")
    listing.add_argument("--json", action="store_true", help="print JSON")
    _add_tracking_uri(listing)
    listing.set_defaults(run=commands.list_versions)


def _bench(bench: argparse.ArgumentParser) -> None:
    from packager.bench.run import DEFAULT_TEXTS, Settings  # their defaults are the options' defaults

    defaults = Settings()
    bench.add_argument("artifacts", type=path, nargs="+", metavar="ARTIFACT",
                       help="artifact directories, of one chain kind")
    bench.add_argument("--reference", metavar="SOURCE", type=checked_text,
                       help="also measure this saved chain in sentence-transformers (torch) and compare with it")
    bench.add_argument("--texts", type=path, help="inputs in the --validation-data formats, pairs for cross-encoders "
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
    bench.set_defaults(run=commands.bench)


def checked_text(value: str) -> str:
    """A path or model id as given: refused here if no system call could take it."""
    problem = ("has a NUL byte" if "\0" in value else f"is over {_PATH_MAX} bytes"
               if len(os.fsencode(value)) >= _PATH_MAX else None)
    long_part = next((part for part in value.split("/") if len(os.fsencode(part)) > _NAME_MAX), None)
    if problem is None and long_part is not None:
        problem = f"has a component over {_NAME_MAX} bytes ({long_part[:40]}...)"
    if problem:
        raise argparse.ArgumentTypeError(f"{value[:60]!r}{'...' if len(value) > 60 else ''} {problem}")
    return value


def path(value: str) -> Path:
    return Path(checked_text(value))


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
    parser.add_argument("--validation-data", type=path,
                        help="extra parity texts: one per line, or JSON Lines (.jsonl) of strings or {\"text\": ...}")

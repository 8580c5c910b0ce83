"""The build: source -> variants -> parity gate -> artifact -> registry -> reports.

Everything that can be refused is refused before the first export: unknown recipes, unreadable
validation data, unsafe or unsupported chains, an unusable registry or reports directory. From
then on every build, failed or not, leaves its reports (``packager.reports``).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from packager.builder.auto import auto_variant
from packager.builder.options import BuildOptions
from packager.builder.prepare import Prepared, inputs_file, prepare
from packager.builder.result import BuildResult, VariantResult
from packager.builder.variant import build_variant
from packager.chain import check_compilable, read_chain
from packager.chain.reference import torch_settings
from packager.errors import ExportError, ParityError, UsageError
from packager.exporters import RECIPES, Registry
from packager.exporters.recipe import Recipe
from packager.failpoints import failpoint
from packager.registry import open_store
from packager.registry.store import Store
from packager.reports import write_reports
from packager.runtime.enums import Precision
from packager.validators.gates import resolve_gate
from packager.validators.report import Gate

log = logging.getLogger(__name__)


def build(source: str, options: BuildOptions, *, recipes: Registry = RECIPES) -> BuildResult:
    """Build, validate and (optionally) register every requested variant of ``source``, then
    write the reports and log them with each new registered version. Once the inputs were
    accepted, a failed build writes its reports too, with the cause. ``recipes``: where the
    recipes come from (tests pass a registry of their own). torch's process-wide settings are
    pinned for the build and given back after it (``torch_settings``)."""
    with torch_settings():
        return _build(source, options, recipes)


def _build(source: str, options: BuildOptions, recipes: Registry) -> BuildResult:
    plan = plan_recipes(options, recipes)
    chain = read_chain(source, revision=options.revision, trust_remote_code=options.trust_remote_code,
                       allow_pickle=options.allow_pickle)
    check_compilable(chain)
    gates = {p: resolve_gate(chain.kind, p, options.gates, token_embeddings=options.token_embeddings)
             for p in Precision}
    extra = inputs_file(options.validation_data, chain.kind)
    calibration = inputs_file(options.calibration_data, chain.kind)
    store = open_store(options.tracking_uri) if options.register else None
    if store is not None:
        store.ping()
    # Loading the reference checks the weights against the config too: still before any writing.
    prepared = prepare(chain, options, extra=extra, calibration=calibration)
    failpoint("build.reference_loaded")
    result = BuildResult(source=source, chain_kind=chain.kind.value,
                         reports=options.reports or options.out / f"{prepared.name}-report")
    if options.write_reports:
        _probe_writable(result.reports)
    try:
        for variant_recipes in plan:
            result.variants.append(_variant(prepared, variant_recipes, gates=gates, options=options, result=result))
            if store is not None:
                _register(store, result.variants[-1], options)
    except Exception as e:
        result.fail(e)
        _write_reports(result, options, failing=True)
        raise
    _write_reports(result, options, failing=False)
    if store is not None and options.write_reports:
        for variant in result.variants:
            if variant.registered and not variant.registered.existing:
                store.log_reports(variant.registered, result.reports)
    return result


def plan_recipes(options: BuildOptions, recipes: Registry = RECIPES) -> list[list[Recipe]]:
    """The recipes to run, checked before any work: one per format and precision, or for
    --precision auto every int8 recipe of each format (its fp32 recipe as the fallback, last)."""
    if options.auto:
        return [[*recipes.candidates(f, Precision.INT8), recipes.get(f, Precision.FP32)] for f in options.formats]
    named = recipes.named(options.recipe) if options.recipe else None
    plan = [[named if named and (named.format, named.precision) == (f, p) else recipes.get(f, p)]
            for f in options.formats for p in options.precisions]
    if named and not any(r[0] is named for r in plan):
        raise UsageError(f"--recipe {named.name} makes {named.format.value}/{named.precision.value}, which was not "
                         "requested")
    return plan


def _variant(prepared: Prepared, recipes: list[Recipe], *, gates: dict[Precision, Gate], options: BuildOptions,
             result: BuildResult) -> VariantResult:
    try:
        variant = auto_variant(prepared, recipes, gates=gates, options=options) if options.auto else build_variant(
            prepared, recipes[0], gate=gates[recipes[0].precision], options=options)
    except ParityError as e:  # the report shows the failing variant beside those that passed
        recipe = recipes[-1]  # the only one, or --precision auto's fp32 fallback
        result.failed.append({"status": "failed-gate", "format": recipe.format.value,
                              "precision": recipe.precision.value, "recipe": recipe.name,
                              "name": f"{prepared.name}-{recipe.format.value}-{recipe.precision.value}",
                              "parity": e.report.to_dict()})
        raise
    failpoint("build.published")
    return variant


def _register(store: Store, variant: VariantResult, options: BuildOptions) -> None:
    assert options.register is not None  # a store is only opened to register
    variant.registered = store.register(variant.artifact, options.register, alias=options.alias,
                                        force_new_version=options.force_new_version, figures=variant.figures())


def _probe_writable(directory: Path) -> None:
    """Make the reports directory and write in it before any export, so a directory that cannot
    take them fails now, not after a long build."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--reports {directory}: not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as e:
        raise ExportError(f"cannot write the reports to {directory} ({e.strerror or e}); nothing was built") from e


def _write_reports(result: BuildResult, options: BuildOptions, *, failing: bool) -> None:
    """The three reports; one that cannot be written fails a successful build and only warns when
    the build already failed for another reason."""
    if not options.write_reports:
        return
    try:
        write_reports(result.reports, result.to_dict())
    except OSError as e:
        if failing:
            log.warning("cannot write the reports to %s: %s", result.reports, e)
            return
        raise ExportError(f"the build succeeded but its reports cannot be written to {result.reports}: {e}") from e

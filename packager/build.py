"""Orchestration: source -> variants -> parity gate -> artifact -> registry -> reports.

Everything that can be refused is refused before the first export: unknown recipes, unreadable
validation data, unsafe or unsupported chains, an unusable registry or reports directory. From
then on every build, failed or not, leaves its reports (``packager.reports``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import re
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packager.artifact import PARITY_FILE, copy_loader, import_loader, new_stage, publish, seal, write_json
from packager.chain import ChainSpec, check_compilable, load_reference, read_chain
from packager.errors import ExportError, ParityError, UsageError
from packager.exporters import RECIPES, Recipe, RecipeContext
from packager.failpoints import failpoint
from packager.manifest_builder import build_manifest, scoring_spec, source_spec
from packager.progress import step
from packager.registry import CANDIDATE_ALIAS, RegisteredVersion, open_store
from packager.reports import write_reports
from packager.runtime.manifest import CalibrationSpec, ChainKind, Format, Manifest, Precision, ScoringSpec
from packager.validators.parity import METRICS, check_parity
from packager.validators.report import Gate, ParityReport, inputs_digest
from packager.validators.texts import calibration_inputs, probe_pairs, probe_texts, read_inputs

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")  # what MLflow accepts
# The build's speed figures (model card, report, registry): batch-1 latency over this many inputs.
LATENCY_INPUTS = 32
# fp32 must reproduce the reference up to float rounding: a real mismatch fails.
DEFAULT_GATES: dict[tuple[ChainKind, Precision], Gate] = {
    (ChainKind.SENTENCE_TRANSFORMER, Precision.FP32): {"min_cosine": 0.99999, "max_rel_diff": 1e-4},
    (ChainKind.SPARSE_ENCODER, Precision.FP32): {"min_cosine": 0.99999, "max_rel_diff": 1e-4, "dot_rel_diff": 1e-4},
    (ChainKind.CROSS_ENCODER, Precision.FP32): {"logit_rel_diff": 1e-4, "score_rel_diff": 1e-4, "spearman_min": 0.99},
    # fp16 weights: rounding at the fourth significant digit.
    (ChainKind.SENTENCE_TRANSFORMER, Precision.FP16): {"min_cosine": 0.999, "mean_cosine": 0.9999,
                                                       "neighbour_agreement_10": 0.95},
    (ChainKind.SPARSE_ENCODER, Precision.FP16): {"min_cosine": 0.999, "top10_overlap_mean": 0.95,
                                                 "dot_spearman_mean": 0.99},
    (ChainKind.CROSS_ENCODER, Precision.FP16): {"spearman_min": 0.99, "top1_agreement": 0.98},
    # int8: what retrieval and reranking notice, not float rounding.
    (ChainKind.SENTENCE_TRANSFORMER, Precision.INT8): {"mean_cosine": 0.995, "min_cosine": 0.98,
                                                       "neighbour_agreement_10": 0.9},
    (ChainKind.SPARSE_ENCODER, Precision.INT8): {"top10_overlap_mean": 0.9, "dot_spearman_mean": 0.98},
    (ChainKind.CROSS_ENCODER, Precision.INT8): {"spearman_min": 0.98, "top1_agreement": 0.95},
}


@dataclass(frozen=True)
class BuildOptions:
    formats: tuple[Format, ...] = (Format.ONNX,)
    precisions: tuple[Precision, ...] = (Precision.FP32,)
    out: Path = Path("dist")
    name: str | None = None
    revision: str | None = None
    register: str | None = None
    alias: str = CANDIDATE_ALIAS  # set on each new verified version
    tracking_uri: str | None = None
    force_new_version: bool = False  # register even if an identical build is already registered
    validation_data: Path | None = None
    calibration_data: Path | None = None
    auto: bool = False  # --precision auto: the fastest int8 recipe that passes, else fp32
    recipe: str | None = None  # a named recipe instead of the default one
    gates: dict[tuple[Precision, str], float] = field(default_factory=dict)  # overrides of DEFAULT_GATES
    token_embeddings: bool = False
    allow_parity_failure: bool = False
    trust_remote_code: bool = False
    allow_pickle: bool = False
    reports: Path | None = None  # default: OUT/NAME-report

    def __post_init__(self) -> None:
        if self.name is not None and not _NAME.fullmatch(self.name):
            raise UsageError(f"--name {self.name!r}: use letters, digits, '.', '_' and '-' (not first)")
        if not _ALIAS.fullmatch(self.alias) or self.alias == "latest" or re.fullmatch(r"[vV]\d+", self.alias):
            raise UsageError(f"--alias {self.alias!r}: use letters, digits, '_' and '-', not 'latest' or 'v<N>'")
        if not self.formats or not (self.precisions or self.auto):
            raise UsageError("at least one format and one precision are needed")
        if self.auto and (self.precisions or self.recipe):
            raise UsageError("--precision auto picks the recipe itself; give neither other precisions nor --recipe")


@dataclass
class VariantResult:
    format: Format
    precision: Precision
    recipe: str
    artifact: Path
    manifest: Manifest
    parity: ParityReport
    seconds: float
    speed: dict[str, float]  # measured through the artifact's loader at build time (see _speed)
    attempts: list[dict[str, Any]] = field(default_factory=list)  # --precision auto: every recipe tried
    registered: RegisteredVersion | None = None

    def figures(self) -> dict[str, float]:
        """What was measured while building, for the registry."""
        return {"build.seconds": round(self.seconds, 2), **{f"speed.{k}": v for k, v in self.speed.items()}}

    def to_dict(self) -> dict[str, Any]:
        return {"status": "published", "format": self.format.value, "precision": self.precision.value,
                "recipe": self.recipe, "name": self.artifact.name, "artifact": str(self.artifact),
                "build_seconds": round(self.seconds, 2), "speed": self.speed, "parity": self.parity.to_dict(),
                "attempts": self.attempts,
                "registered": dataclasses.asdict(self.registered) if self.registered else None}


@dataclass
class BuildResult:
    """What a build did, as far as it got: the content of its reports."""

    source: str
    chain_kind: str
    reports: Path
    variants: list[VariantResult] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # variants refused by their gate
    error: dict[str, Any] | None = None  # why the build stopped, if it did
    started: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        from packager import __version__

        return {"status": "failed" if self.error else "ok", "exit_code": self.error["exit_code"] if self.error else 0,
                "error": self.error, "source": self.source, "chain_kind": self.chain_kind,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                "seconds": round(time.time() - self.started, 2),
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "packager_version": __version__,
                "variants": [v.to_dict() for v in self.variants] + self.failed}


@dataclass(frozen=True)
class _Prepared:
    """What every variant of one build shares: the chain, its reference, its route graphs and
    the parity inputs."""

    chain: ChainSpec
    reference: Any
    routes: tuple[Any, ...]
    verbs: dict[str, str]
    scoring: ScoringSpec | None
    inputs: list
    calibration: list
    calibration_spec: CalibrationSpec
    name: str


def build(source: str, options: BuildOptions) -> BuildResult:
    """Build, validate and (optionally) register every requested variant of ``source``, then
    write the reports and log them with each new registered version. Once the inputs were
    accepted, a failed build writes its reports too, with the cause."""
    plan = _plan(options)
    chain = read_chain(source, revision=options.revision, trust_remote_code=options.trust_remote_code,
                       allow_pickle=options.allow_pickle)
    check_compilable(chain)
    gates = {precision: _gate(chain.kind, precision, options) for precision in Precision}
    extra = _inputs_file(options.validation_data, chain.kind)
    calibration = _inputs_file(options.calibration_data, chain.kind)
    store = open_store(options.tracking_uri) if options.register else None
    if store is not None:
        store.ping()
    # Loading the reference checks the weights against the config too: still before any writing.
    prepared = _prepare(chain, options, extra, calibration)
    failpoint("build.reference_loaded")
    result = BuildResult(source=source, chain_kind=chain.kind.value,
                         reports=options.reports or options.out / f"{prepared.name}-report")
    _probe_writable(result.reports)
    try:
        for recipes in plan:
            result.variants.append(_build_variant(prepared, recipes, gates, options, result))
            if store is not None:
                variant = result.variants[-1]
                variant.registered = store.register(variant.artifact, options.register, alias=options.alias,
                                                    force_new_version=options.force_new_version,
                                                    figures=variant.figures())
    except Exception as e:
        code = getattr(e, "exit_code", 1)  # 1: a bug; the report still says how far it got
        result.error = {"type": type(e).__name__, "message": str(e), "exit_code": code if isinstance(code, int) else 1}
        try:
            write_reports(result.reports, result.to_dict())
        except OSError as write_error:
            log.warning("cannot write the reports to %s: %s", result.reports, write_error)
        raise
    try:
        write_reports(result.reports, result.to_dict())
    except OSError as e:
        raise ExportError(f"the build succeeded but its reports cannot be written to {result.reports}: {e}") from e
    for variant in result.variants:
        if store is not None and variant.registered and not variant.registered.existing:
            store.log_reports(variant.registered, result.reports)
    return result


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


def _build_variant(prepared: _Prepared, recipes: list[Recipe], gates: dict[Precision, Gate], options: BuildOptions,
                   result: BuildResult) -> VariantResult:
    try:
        variant = _auto_variant(prepared, recipes, gates, options) if options.auto else _variant(
            prepared, recipes[0], gates[recipes[0].precision], options)
    except ParityError as e:  # the report shows the failing variant beside those that passed
        recipe = recipes[-1]  # the only one, or --precision auto's fp32 fallback
        result.failed.append({"status": "failed-gate", "format": recipe.format.value,
                              "precision": recipe.precision.value, "recipe": recipe.name,
                              "name": f"{prepared.name}-{recipe.format.value}-{recipe.precision.value}",
                              "parity": e.report.to_dict()})
        raise
    failpoint("build.published")
    return variant


def _plan(options: BuildOptions) -> list[list[Recipe]]:
    """The recipes to run, checked before any work: one per format and precision, or for
    --precision auto every int8 recipe of each format (its fp32 recipe as the fallback, last)."""
    if options.auto:
        return [[*RECIPES.candidates(f, Precision.INT8), RECIPES.get(f, Precision.FP32)] for f in options.formats]
    named = RECIPES.named(options.recipe) if options.recipe else None
    recipes = [[named if named and (named.format, named.precision) == (f, p) else RECIPES.get(f, p)]
               for f in options.formats for p in options.precisions]
    if named and not any(r[0] is named for r in recipes):
        raise UsageError(f"--recipe {named.name} makes {named.format.value}/{named.precision.value}, which was not "
                         "requested")
    return recipes


def validate(artifact: Path, source: str, *, validation_data: Path | None = None, trust_remote_code: bool = False,
             allow_pickle: bool = False) -> ParityReport:
    """Re-run the parity gate of a built artifact (through its own loader) against ``source``,
    with the gate it was built with."""
    candidate = import_loader(artifact).load(artifact)
    manifest: Manifest = candidate.manifest
    chain = read_chain(source, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    extra = _inputs_file(validation_data, chain.kind)
    if source_spec(chain).sha256 != manifest.source.sha256:
        log.warning("the reference's files differ from those %s was built from (%s)", artifact, manifest.source.location)
    reference = load_reference(chain)
    from packager.graph import compile_routes

    inputs = _parity_inputs(chain.kind, compile_routes(reference, chain), extra)
    return check_parity(reference, candidate, inputs, dict(manifest.parity.gate))


def _inputs_file(path: Path | None, kind: ChainKind) -> list:
    return read_inputs(path, pairs=kind is ChainKind.CROSS_ENCODER) if path else []


def _gate(kind: ChainKind, precision: Precision, options: BuildOptions) -> Gate:
    gate = dict(DEFAULT_GATES[(kind, precision)])
    known = METRICS[kind]
    for (for_precision, metric), threshold in options.gates.items():
        if metric not in known:
            raise UsageError(f"--gate {for_precision.value}.{metric}: {kind.value} parity has no metric {metric!r}; "
                             f"it has: {', '.join(sorted(known))}")
        if for_precision is precision:
            gate[metric] = threshold
    if options.token_embeddings and "token_min_cosine" not in gate:  # unless --gate set it
        gate["token_min_cosine"] = gate.get("min_cosine", DEFAULT_GATES[(kind, Precision.FP32)]["min_cosine"])
    return gate


def _prepare(chain: ChainSpec, options: BuildOptions, extra: list, calibration: list) -> _Prepared:
    from packager.graph import compile_routes, verb_routes

    with step(f"load the torch reference from {chain.source.location}"):
        reference = load_reference(chain)
        # An activation the runtime cannot apply is refused here, before any export.
        scoring = scoring_spec(reference) if chain.kind is ChainKind.CROSS_ENCODER else None
        routes = compile_routes(reference, chain, token_embeddings=options.token_embeddings)
    calibration = calibration or calibration_inputs(pairs=chain.kind is ChainKind.CROSS_ENCODER)
    spec = CalibrationSpec(source=str(options.calibration_data or "built-in"), samples=len(calibration),
                           sha256=inputs_digest(calibration))
    return _Prepared(chain=chain, reference=reference, routes=routes, verbs=verb_routes(reference, chain),
                     scoring=scoring, inputs=_parity_inputs(chain.kind, routes, extra), calibration=calibration,
                     calibration_spec=spec, name=options.name or _default_name(chain))


def _parity_inputs(kind: ChainKind, routes: tuple[Any, ...], extra: list) -> list:
    """The built-in probes, sized by each route's own tokenizer and truncation length (texts at,
    below and above it), then the user's inputs."""
    from tokenizers import Tokenizer

    probes: dict[Any, None] = {}
    for route in routes:
        tokenizer, spec = Tokenizer.from_str(route.tokenizer_json), route.tokenizer
        if kind is ChainKind.CROSS_ENCODER:
            count = lambda pair: len(tokenizer.encode(*pair, add_special_tokens=spec.add_special_tokens).ids)  # noqa: E731
            probes.update(dict.fromkeys(probe_pairs(count, spec.max_length)))
        else:
            count = lambda text: len(tokenizer.encode(text, add_special_tokens=spec.add_special_tokens).ids)  # noqa: E731
            probes.update(dict.fromkeys(probe_texts(count, spec.max_length)))
    return [*probes, *extra]


@dataclass
class _Staged:
    """A variant built and gated in its staging directory, not yet published."""

    recipe: Recipe
    name: str
    stage: Path
    manifest: Manifest
    report: ParityReport
    gate: Gate
    seconds: float
    speed: dict[str, float]


def _variant(prep: _Prepared, recipe: Recipe, gate: Gate, options: BuildOptions) -> VariantResult:
    staged = _stage(prep, recipe, gate, options)
    try:
        if not staged.report.passed and not options.allow_parity_failure:
            raise ParityError(f"{staged.name}: the artifact does not reproduce the reference; nothing was published.\n"
                              f"{staged.report.describe()}", staged.report)
        return _publish(staged, options.out)
    finally:
        shutil.rmtree(staged.stage, ignore_errors=True)


def _auto_variant(prep: _Prepared, recipes: list[Recipe], gates: dict[Precision, Gate],
                  options: BuildOptions) -> VariantResult:
    """Build every int8 recipe, gate each, publish the one measured fastest among those that pass;
    if none passes, the fp32 recipe (the last in ``recipes``)."""
    *int8, fallback = recipes
    attempts, passed, speed = [], [], {}
    try:
        for recipe in int8:
            try:
                staged = _stage(prep, recipe, gates[recipe.precision], options)
            except ExportError as e:  # a recipe that cannot make this model loses, and says why
                attempts.append({"recipe": recipe.name, "passed": False, "error": str(e).splitlines()[0]})
                continue
            attempt = {"recipe": recipe.name, "passed": staged.report.passed, "failures": staged.report.failures,
                       "build_seconds": round(staged.seconds, 1)}
            if staged.report.passed:
                passed.append(staged)
                attempt["inputs_per_second"] = speed[recipe.name] = staged.speed["inputs_per_second"]
            else:
                shutil.rmtree(staged.stage, ignore_errors=True)
            attempts.append(attempt)
        winner = max(passed, key=lambda staged: speed[staged.recipe.name]) if passed else None
        for attempt in attempts:
            attempt["outcome"] = _outcome(attempt, winner)
        log.info("auto: %s", "; ".join(f"{a['recipe']}: {a['outcome']}" for a in attempts))
        if winner is None:
            result = _variant(prep, fallback, gates[fallback.precision], options)
        else:
            result = _publish(winner, options.out)
        result.attempts = attempts
        return result
    finally:
        for staged in passed:
            shutil.rmtree(staged.stage, ignore_errors=True)


def _outcome(attempt: dict[str, Any], winner: _Staged | None) -> str:
    if "error" in attempt:
        return "export failed: " + attempt["error"]
    if not attempt["passed"]:
        return "failed its gate: " + "; ".join(attempt["failures"][:3])
    if winner is not None and attempt["recipe"] == winner.recipe.name:
        return f"won: passed, fastest at {attempt['inputs_per_second']:.1f} inputs/s"
    return f"passed, but slower ({attempt['inputs_per_second']:.1f} inputs/s)"


def _speed(model: Any, inputs: list) -> dict[str, float]:
    """Through the staged artifact's own loader, on the calibration inputs (real text, none of
    the parity probes' extremes): inputs per second in batches of 32 after a warm-up batch, and
    the median batch-1 latency over the first LATENCY_INPUTS."""
    # ==, not is: the staged loader's manifest has the artifact's own copy of ChainKind.
    verb = model.predict if model.manifest.chain_kind == ChainKind.CROSS_ENCODER else model.encode
    verb(inputs[:32], batch_size=32)
    started = time.perf_counter()
    verb(inputs, batch_size=32)
    throughput = len(inputs) / (time.perf_counter() - started)
    latencies = []
    for item in inputs[:LATENCY_INPUTS]:
        started = time.perf_counter()
        verb([item], batch_size=1)
        latencies.append(time.perf_counter() - started)
    return {"inputs_per_second": round(throughput, 1), "latency_p50_ms": round(statistics.median(latencies) * 1e3, 2)}


def _stage(prep: _Prepared, recipe: Recipe, gate: Gate, options: BuildOptions) -> _Staged:
    """Export every route with ``recipe``, seal, and run the parity gate, in a staging directory."""
    started = time.perf_counter()
    name = f"{prep.name}-{recipe.format.value}-{recipe.precision.value}"
    try:
        stage = new_stage(options.out, name)
    except OSError as e:
        raise ExportError(f"cannot create a staging directory in {options.out}: {e}") from e
    try:
        log.info("%s: %s on %d route(s) of the whole chain (%s)", name, recipe.name, len(prep.routes),
                 ", ".join(m.kind.value for m in prep.chain.all_modules()))
        files, details = _write_routes(prep, recipe, gate, stage, name)
        failpoint("build.exported")
        calibration = prep.calibration_spec if recipe.calibrates else None
        draft = seal(stage, build_manifest(prep.chain, prep.reference, prep.routes, prep.verbs, prep.scoring,
                                           recipe, details, calibration, name, files))
        log.info("%s: parity gate (%s)", name, ", ".join(f"{k} {v}" for k, v in gate.items()))
        candidate = import_loader(stage).load(stage)
        with step(f"{name}: parity gate, {len(prep.inputs)} inputs", total=len(candidate.manifest.verbs)) as advance:
            report = check_parity(prep.reference, candidate, prep.inputs, gate, advance=advance)
        log.info("%s", report.describe())
        speed = {}
        if report.passed or options.allow_parity_failure:
            with step(f"{name}: speed"):
                speed = _speed(candidate, prep.calibration)
        del candidate
        write_json(stage / PARITY_FILE, report.to_dict())
        final = seal(stage, dataclasses.replace(draft, parity=report.summary(gate)), speed=speed)
        failpoint("build.validated")
    except OSError as e:  # disk full, permissions: nothing half-written is left behind
        shutil.rmtree(stage, ignore_errors=True)
        raise ExportError(f"{name}: writing the artifact in {options.out} failed ({e}); is the disk full or the "
                          "directory not writable? Nothing was published; an artifact already there is untouched.") from e
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return _Staged(recipe=recipe, name=name, stage=stage, manifest=final, report=report, gate=gate,
                   seconds=time.perf_counter() - started, speed=speed)


def _publish(staged: _Staged, out: Path) -> VariantResult:
    target = out / staged.name
    try:
        publish(staged.stage, target, staged.manifest)
    except OSError as e:
        raise ExportError(f"{staged.name}: publishing the artifact failed: {e}") from e
    log.info("%s: published %s (%s) in %.1f s", staged.name, target, staged.recipe.name, staged.seconds)
    return VariantResult(format=staged.recipe.format, precision=staged.recipe.precision, recipe=staged.recipe.name,
                         artifact=target, manifest=staged.manifest, parity=staged.report, seconds=staged.seconds,
                         speed=staged.speed)


def _write_routes(prep: _Prepared, recipe: Recipe, gate: Gate, stage: Path,
                  name: str) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """Write every route's tokenizer (one file per distinct tokenizer), export its graph with the
    recipe, and add the loader package. Returns route -> (graph file, tokenizer file), and what
    the recipe decided (per route when there are several)."""
    files: dict[str, tuple[str, str]] = {}
    details: dict[str, str] = {}
    tokenizers: dict[str, str] = {}
    with step(f"{name}: export ({recipe.name})", total=len(prep.routes)) as advance:
        for route in prep.routes:
            stem = "model" if len(prep.routes) == 1 else re.sub(r"[^A-Za-z0-9._-]", "_", route.name)
            if route.tokenizer_json not in tokenizers:
                tokenizer_file = "tokenizer.json" if not tokenizers else f"tokenizer.{stem}.json"
                (stage / tokenizer_file).write_text(route.tokenizer_json, encoding="utf-8")
                tokenizers[route.tokenizer_json] = tokenizer_file
            tokenizer = dataclasses.replace(route.tokenizer, file=tokenizers[route.tokenizer_json])
            context = RecipeContext(kind=prep.chain.kind, calibration=prep.calibration, gate=gate, tokenizer=tokenizer)
            result = recipe.export(route, stage, stem=stem, context=context)
            files[route.name] = (result.files[0], tokenizer.file)
            prefix = f"{route.name}." if len(prep.routes) > 1 else ""
            details.update({prefix + k: v for k, v in result.details.items()})
            advance()
    copy_loader(stage)
    return files, details


def _default_name(chain: ChainSpec) -> str:
    """The source folder's or model's name, made safe for a directory name."""
    stem = chain.source.location.rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "model"

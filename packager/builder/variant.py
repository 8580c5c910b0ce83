"""One variant's life: export every route with its recipe into a staging directory, seal it, run
its own loader against the reference (the parity gate), measure its speed, seal it again with
the result, and publish it (or leave nothing behind)."""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from packager.bench.speed import measure_speed
from packager.builder.contract import RouteFiles, build_manifest
from packager.builder.model_card import model_card
from packager.builder.options import BuildOptions
from packager.builder.prepare import Prepared
from packager.builder.result import VariantResult
from packager.errors import ExportError, ParityError
from packager.exporters.recipe import Recipe, RecipeContext
from packager.failpoints import failpoint
from packager.progress import step
from packager.publish import PARITY_FILE, copy_loader, import_loader, new_stage, publish, seal
from packager.reports import write_json
from packager.runtime.enums import ChainKind, Int8Arithmetic
from packager.runtime.manifest import FLOAT_PRODUCTS_RUN, Manifest
from packager.validators.parity import check_parity, gate_calls, run_gate_references
from packager.validators.report import Gate, ParityReport

log = logging.getLogger(__name__)

# The build's speed figures (model card, report, registry): one pass in batches of 32, and the
# batch-1 latency over this many inputs (``packager bench`` measures at length).
LATENCY_INPUTS = 32


@dataclass
class Staged:
    """A variant built and gated in its staging directory, not yet published."""

    recipe: Recipe
    name: str
    stage: Path
    manifest: Manifest
    report: ParityReport
    gate: Gate
    seconds: float
    speed: dict[str, float]


def build_variant(prep: Prepared, recipe: Recipe, *, gate: Gate, options: BuildOptions) -> VariantResult:
    """Stage the variant and publish it if its gate passed (or failure is allowed); raises
    ParityError, publishing nothing, otherwise."""
    staged = stage(prep, recipe, gate=gate, options=options)
    try:
        if not staged.report.passed and not options.allow_parity_failure:
            raise ParityError(f"{staged.name}: the artifact does not reproduce the reference; nothing was published.\n"
                              f"{staged.report.describe()}", staged.report)
        return publish_staged(staged, options.out)
    finally:
        shutil.rmtree(staged.stage, ignore_errors=True)


def stage(prep: Prepared, recipe: Recipe, *, gate: Gate, options: BuildOptions) -> Staged:
    """Export every route with ``recipe``, seal, and run the parity gate, in a staging directory."""
    started = time.perf_counter()
    name = f"{prep.name}-{recipe.format.value}-{recipe.precision.value}"
    try:
        stage_dir = new_stage(options.out, name)
    except OSError as e:
        raise ExportError(f"cannot create a staging directory in {options.out}: {e}") from e
    try:
        draft = _export(prep, recipe, gate=gate, stage_dir=stage_dir, name=name)
        report, speed = _gate(prep, stage_dir, draft, name=name, gate=gate, measure=options.measure_speed,
                              allow_failure=options.allow_parity_failure)
        write_json(stage_dir / PARITY_FILE, report.to_dict())
        final = dataclasses.replace(draft, parity=report.summary(gate))
        final = seal(stage_dir, final, readme=model_card(final, speed))
        failpoint("build.validated")
    except OSError as e:  # disk full, permissions: nothing half-written is left behind
        shutil.rmtree(stage_dir, ignore_errors=True)
        raise ExportError(f"{name}: writing the artifact in {options.out} failed ({e}); is the disk full or the "
                          "directory not writable? Nothing was published; an artifact already there is "
                          "untouched.") from e
    except BaseException:
        shutil.rmtree(stage_dir, ignore_errors=True)
        raise
    return Staged(recipe=recipe, name=name, stage=stage_dir, manifest=final, report=report, gate=gate,
                  seconds=time.perf_counter() - started, speed=speed)


def _export(prep: Prepared, recipe: Recipe, *, gate: Gate, stage_dir: Path, name: str) -> Manifest:
    """Every route's graph and tokenizer and the loader, sealed with a manifest whose parity is pending."""
    log.info("%s: %s on %d route(s) of the whole chain (%s)", name, recipe.name, len(prep.routes),
             ", ".join(m.kind.value for m in prep.chain.all_modules()))
    files, details = write_routes(prep, recipe, gate=gate, stage_dir=stage_dir, name=name)
    failpoint("build.exported")
    draft = build_manifest(
        prep.chain, prep.reference.model, routes=prep.routes, verbs=prep.verbs, scoring=prep.scoring, recipe=recipe,
        details=details, calibration=prep.calibration_spec if recipe.calibrates else None, name=name, files=files,
        ranges=prep.ranges)
    return seal(stage_dir, draft, readme=model_card(draft, {}))


def _gate(prep: Prepared, stage_dir: Path, draft: Manifest, *, name: str, gate: Gate, measure: bool,
          allow_failure: bool) -> tuple[ParityReport, dict[str, float]]:
    """The staged artifact through its own loader: its parity report, and its speed if it passed
    (or may be published anyway) and speed is measured. The reference runs first, and its torch
    weights are freed before the candidate loads: every route was exported by now (later
    variants reuse those exports), and every variant's gate makes the same calls."""
    log.info("%s: parity gate (%s)", name, ", ".join(f"{k} {v}" for k, v in gate.items()))
    with step(f"{name}: the torch reference on {len(prep.inputs)} inputs"):
        run_gate_references(prep.reference, draft, prep.inputs)
    prep.reference.release()
    loader = import_loader(stage_dir)
    candidate = loader.load(stage_dir)
    calls = gate_calls(candidate.manifest)
    with step(f"{name}: parity gate, {len(prep.inputs)} inputs", total=len(calls)) as advance:
        report = check_parity(prep.reference, candidate, prep.inputs, gate=gate, advance=advance)
    if draft.int8_arithmetic is Int8Arithmetic.VNNI_OR_FLOAT_PRODUCTS:  # and as CPUs without VNNI run it
        floats = loader.load(stage_dir, float_products=True)
        with step(f"{name}: parity gate, float products", total=len(calls)) as advance:
            report = report.with_run(check_parity(prep.reference, floats, prep.inputs, gate=gate, advance=advance),
                                     FLOAT_PRODUCTS_RUN)
        del floats  # its compiled model, before the speed is measured
    log.info("%s", report.describe())
    if not measure or not (report.passed or allow_failure):
        return report, {}
    with step(f"{name}: speed"):
        return report, speed(candidate, prep.calibration)


def speed(model: object, inputs: list) -> dict[str, float]:
    """Through an artifact's own loader, on the calibration inputs (real text, none of the parity
    probes' extremes): inputs per second in batches of 32, the median batch-1 latency."""
    # ==, not is: a staged loader's manifest has the artifact's own copy of ChainKind.
    verb = model.predict if model.manifest.chain_kind == ChainKind.CROSS_ENCODER else model.encode  # type: ignore[attr-defined]
    figures, _ = measure_speed(lambda batch, size: verb(batch, batch_size=size), inputs, batch_size=32, rounds=1,
                               latency_inputs=LATENCY_INPUTS)
    return {"inputs_per_second": round(figures["inputs_per_second"], 1),
            "latency_p50_ms": round(figures["latency_p50_ms"], 2)}


def publish_staged(staged: Staged, out: Path) -> VariantResult:
    target = out / staged.name
    try:
        publish(staged.stage, target, staged.manifest)
    except OSError as e:
        raise ExportError(f"{staged.name}: publishing the artifact failed: {e}") from e
    log.info("%s: published %s (%s) in %.1f s", staged.name, target, staged.recipe.name, staged.seconds)
    return VariantResult(format=staged.recipe.format, precision=staged.recipe.precision, recipe=staged.recipe.name,
                         artifact=target, manifest=staged.manifest, parity=staged.report, seconds=staged.seconds,
                         speed=staged.speed)


def write_routes(prep: Prepared, recipe: Recipe, *, gate: Gate, stage_dir: Path,
                 name: str) -> tuple[dict[str, RouteFiles], dict[str, str]]:
    """Write every route's tokenizer and chat template (one file per distinct one), export its
    graph with the recipe, and add the loader package. Returns each route's files, and what the
    recipe decided (per route when there are several)."""
    files: dict[str, RouteFiles] = {}
    details: dict[str, str] = {}
    written: dict[tuple[str, str], str] = {}  # (file kind, content) -> file name

    def write(kind: str, stem: str, suffix: str, content: str) -> str:
        if (kind, content) not in written:
            taken = sum(k == kind for k, _ in written)
            written[kind, content] = f"{kind}{suffix}" if not taken else f"{kind}.{stem}{suffix}"
            (stage_dir / written[kind, content]).write_text(content, encoding="utf-8")
        return written[kind, content]

    with step(f"{name}: export ({recipe.name})", total=len(prep.routes)) as advance:
        for route in prep.routes:
            stem = "model" if len(prep.routes) == 1 else re.sub(r"[^A-Za-z0-9._-]", "_", route.name)
            tokenizer = None if route.tokenizer is None else dataclasses.replace(route.tokenizer, file=write(
                "tokenizer" if route.tokenizer.words is None else "vocabulary", stem, ".json", route.tokenizer_json))
            chat = None if route.chat is None else dataclasses.replace(
                route.chat, template=write("chat_template", stem, ".jinja", route.chat_template))
            context = RecipeContext(kind=prep.chain.kind, calibration=prep.calibration, gate=gate, tokenizer=tokenizer,
                                    chat=chat)
            result = recipe.export(route, stage_dir, stem=stem, context=context)
            files[route.name] = RouteFiles(graph=result.files[0], tokenizer=tokenizer.file if tokenizer else None,
                                           chat_template=chat.template if chat else None)
            prefix = f"{route.name}." if len(prep.routes) > 1 else ""
            details.update({prefix + k: v for k, v in result.details.items()})
            advance()
    copy_loader(stage_dir)
    return files, details

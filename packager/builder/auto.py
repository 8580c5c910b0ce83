"""``--precision auto``: build every int8 recipe of a format, gate each, and publish the one
measured fastest among those that pass; if none passes, the format's fp32 recipe."""

from __future__ import annotations

import logging
import shutil
from typing import Any

from packager.builder.options import BuildOptions
from packager.builder.prepare import Prepared
from packager.builder.result import VariantResult
from packager.builder.variant import Staged, build_variant, publish_staged, stage
from packager.errors import ExportError
from packager.exporters.recipe import Recipe
from packager.runtime.enums import Precision
from packager.validators.report import Gate

log = logging.getLogger(__name__)


def auto_variant(prep: Prepared, recipes: list[Recipe], *, gates: dict[Precision, Gate],
                 options: BuildOptions) -> VariantResult:
    """``recipes``: the int8 candidates, then the fp32 fallback. The result lists every attempt
    and why it lost."""
    *int8, fallback = recipes
    attempts: list[dict[str, Any]] = []
    passed: list[Staged] = []
    try:
        for recipe in int8:
            staged = _attempt(prep, recipe, gate=gates[recipe.precision], options=options, attempts=attempts)
            if staged is not None:
                passed.append(staged)
        winner = max(passed, key=lambda s: s.speed["inputs_per_second"]) if passed else None
        for attempt in attempts:
            attempt["outcome"] = _outcome(attempt, winner)
        log.info("auto: %s", "; ".join(f"{a['recipe']}: {a['outcome']}" for a in attempts))
        if winner is None:
            result = build_variant(prep, fallback, gate=gates[fallback.precision], options=options)
        else:
            result = publish_staged(winner, options.out)
        result.attempts = attempts
        return result
    finally:
        for staged in passed:
            shutil.rmtree(staged.stage, ignore_errors=True)


def _attempt(prep: Prepared, recipe: Recipe, *, gate: Gate, options: BuildOptions,
             attempts: list[dict[str, Any]]) -> Staged | None:
    """Stage one candidate and record the attempt; the staged variant if it passed its gate."""
    try:
        staged = stage(prep, recipe, gate=gate, options=options)
    except ExportError as e:  # a recipe that cannot make this model loses, and says why
        attempts.append({"recipe": recipe.name, "passed": False, "error": str(e).splitlines()[0]})
        return None
    attempt = {"recipe": recipe.name, "passed": staged.report.passed, "failures": staged.report.failures,
               "build_seconds": round(staged.seconds, 1)}
    attempts.append(attempt)
    if not staged.report.passed:
        shutil.rmtree(staged.stage, ignore_errors=True)
        return None
    attempt["inputs_per_second"] = staged.speed["inputs_per_second"]
    return staged


def _outcome(attempt: dict[str, Any], winner: Staged | None) -> str:
    if "error" in attempt:
        return "export failed: " + attempt["error"]
    if not attempt["passed"]:
        return "failed its gate: " + "; ".join(attempt["failures"][:3])
    if winner is not None and attempt["recipe"] == winner.recipe.name:
        return f"won: passed, fastest at {attempt['inputs_per_second']:.1f} inputs/s"
    return f"passed, but slower ({attempt['inputs_per_second']:.1f} inputs/s)"

"""What every variant of one build shares, made once: the chain, its torch reference, its route
graphs, the verbs' routes, the parity inputs, the calibration inputs and, for dense embedders,
the ranges of the int8/uint8 output precisions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packager.builder.contract import scoring_spec
from packager.builder.options import BuildOptions
from packager.chain import ChainSpec, load_reference
from packager.progress import step
from packager.runtime.enums import ChainKind
from packager.runtime.manifest import CalibrationSpec, EmbeddingRanges, ScoringSpec
from packager.runtime.routes import VerbSpec
from packager.validators.parity import ReferenceRuns, parity_calls, tasks_matter
from packager.validators.report import inputs_digest
from packager.validators.texts import calibration_inputs, probe_pairs, probe_texts, read_inputs

# The fewest calibration texts the int8/uint8 output ranges are taken from; with fewer (a small
# --calibration-data), none are recorded and those precisions ask for ranges= instead.
RANGE_TEXTS = 64


@dataclass(frozen=True)
class Prepared:
    """What every variant of one build shares. ``reference`` runs the saved chain in torch and
    keeps its outputs, so every variant is judged against one set of reference outputs."""

    chain: ChainSpec
    reference: ReferenceRuns
    routes: tuple[Any, ...]
    verbs: dict[str, VerbSpec]
    scoring: ScoringSpec | None
    inputs: list
    calibration: list
    calibration_spec: CalibrationSpec
    name: str
    ranges: dict[str, EmbeddingRanges]


def inputs_file(path: Path | None, kind: ChainKind) -> list:
    """Validation or calibration inputs from ``path`` (texts, or pairs for cross-encoders); none
    without a path."""
    return read_inputs(path, pairs=kind is ChainKind.CROSS_ENCODER) if path else []


def prepare(chain: ChainSpec, options: BuildOptions, *, extra: list, calibration: list) -> Prepared:
    """Load the reference (which checks the weights against the config too), resolve every route
    and the verbs' routes, and size the parity probes by each route's tokenizer."""
    from packager.chain.graph import compile_routes, verb_specs

    with step(f"load the torch reference from {chain.source.location}"):
        model = load_reference(chain)
        # An activation the runtime cannot apply is refused here, before any export.
        scoring = scoring_spec(model) if chain.kind is ChainKind.CROSS_ENCODER else None
        routes = compile_routes(model, chain, token_embeddings=options.token_embeddings)
        verbs = verb_specs(model, chain)
    calibration = calibration or calibration_inputs(pairs=chain.kind is ChainKind.CROSS_ENCODER)
    spec = CalibrationSpec(source=str(options.calibration_data or "built-in"), samples=len(calibration),
                           sha256=inputs_digest(calibration))
    inputs = parity_inputs(chain.kind, routes, verbs, extra)
    check_chat_inputs(model, routes, verbs, [*inputs, *calibration])
    reference = ReferenceRuns(model)
    ranges = {}
    embeds = chain.kind in (ChainKind.SENTENCE_TRANSFORMER, ChainKind.MULTI_VECTOR_ENCODER)
    if embeds and len(calibration) >= RANGE_TEXTS:
        with step(f"output ranges: the reference on {len(calibration)} calibration texts"):
            ranges = embedding_ranges(reference, verbs, calibration, tasks=tasks_matter(chain.all_modules(), routes))
    return Prepared(chain=chain, reference=reference, routes=routes, verbs=verbs, scoring=scoring,
                    inputs=inputs, calibration=calibration, calibration_spec=spec,
                    name=options.name or default_name(chain), ranges=ranges)


def embedding_ranges(reference: ReferenceRuns, verbs: dict[str, VerbSpec], texts: list, *,
                     tasks: bool) -> dict[str, EmbeddingRanges]:
    """Each verb's per-dimension minima and maxima over its reference embeddings of ``texts``
    (a multi-vector encoder's: over every token vector it keeps; verbs that make the same call,
    once): where the int8/uint8 output precisions put their buckets, the same for every variant of
    the build and every request."""
    import numpy as np

    model = reference.model
    plain = [call for call in parity_calls(verbs, dict(model.prompts), model.default_prompt_name, tasks_matter=tasks)
             if call.label == call.verb_name]  # each verb as called, its default prompt included
    made: dict[tuple, EmbeddingRanges] = {}
    for call in plain:
        if call.key not in made:
            outputs = reference(call.verb_name, texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
            rows = [r for r in (np.atleast_2d(o) for o in outputs) if len(r)]  # vectors, or [tokens, dim] matrices
            low, high = np.min([r.min(axis=0) for r in rows], axis=0), np.max([r.max(axis=0) for r in rows], axis=0)
            made[call.key] = EmbeddingRanges(minimum=tuple(low.astype(np.float32).tolist()),
                                             maximum=tuple(high.astype(np.float32).tolist()))
    return {call.verb_name: made[call.key] for call in plain}


def check_chat_inputs(reference: Any, routes: tuple[Any, ...], verbs: dict[str, VerbSpec], inputs: list) -> None:
    """Every input the reference will render, in every call the gate makes, through the route's
    bounded chat renderer first: a template that fails or runs away is refused here."""
    from packager.chain.graph import check_renders

    encoders = {route.name: route.encoder for route in routes}
    renders = {(call.verb.route, call.prompt, call.verb.task)  # calls that render alike, once
               for call in parity_calls(verbs, dict(reference.prompts), reference.default_prompt_name)}
    for route, prompt, task in renders:
        check_renders(route, encoders[route], inputs, prompt=prompt, task=task)


def parity_inputs(kind: ChainKind, routes: tuple[Any, ...], verbs: dict[str, VerbSpec], extra: list) -> list:
    """The built-in probes, sized by each verb's own tokenizer (and chat template) and truncation
    length (inputs at, below and above it, rendered), then the user's inputs."""
    probes: dict[Any, None] = {}
    by_name = {route.name: route for route in routes}
    for verb in dict.fromkeys(verbs.values()):
        route = by_name[verb.route]

        def count(item: Any, encoder: Any = route.encoder, task: str | None = verb.task) -> int:
            return encoder.count(item, task=task)

        max_length = verb.max_length or route.tokenizer.max_length
        made = probe_pairs(count, max_length) if kind is ChainKind.CROSS_ENCODER else probe_texts(count, max_length)
        probes.update(dict.fromkeys(made))
    return [*probes, *extra]


def default_name(chain: ChainSpec) -> str:
    """The source folder's or model's name, made safe for a directory name."""
    stem = chain.source.location.rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "model"

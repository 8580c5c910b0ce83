"""What every variant of one build shares, made once: the chain, its torch reference, its route
graphs, the verbs' routes, the parity inputs and the calibration inputs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packager.builder.manifest import scoring_spec
from packager.builder.options import BuildOptions
from packager.chain import ChainSpec, load_reference
from packager.common.progress import step
from packager.runtime.manifest import CalibrationSpec, ChainKind, ScoringSpec
from packager.validators.parity import ReferenceRuns
from packager.validators.report import inputs_digest
from packager.validators.texts import calibration_inputs, probe_pairs, probe_texts, read_inputs


@dataclass(frozen=True)
class Prepared:
    """What every variant of one build shares. ``reference`` runs the saved chain in torch and
    keeps its outputs, so every variant is judged against one set of reference outputs."""

    chain: ChainSpec
    reference: ReferenceRuns
    routes: tuple[Any, ...]
    verbs: dict[str, str]
    scoring: ScoringSpec | None
    inputs: list
    calibration: list
    calibration_spec: CalibrationSpec
    name: str


def inputs_file(path: Path | None, kind: ChainKind) -> list:
    """Validation or calibration inputs from ``path`` (texts, or pairs for cross-encoders); none
    without a path."""
    return read_inputs(path, pairs=kind is ChainKind.CROSS_ENCODER) if path else []


def prepare(chain: ChainSpec, options: BuildOptions, *, extra: list, calibration: list) -> Prepared:
    """Load the reference (which checks the weights against the config too), resolve every route
    and the verbs' routes, and size the parity probes by each route's tokenizer."""
    from packager.chain.graph import compile_routes, verb_routes

    with step(f"load the torch reference from {chain.source.location}"):
        model = load_reference(chain)
        # An activation the runtime cannot apply is refused here, before any export.
        scoring = scoring_spec(model) if chain.kind is ChainKind.CROSS_ENCODER else None
        routes = compile_routes(model, chain, token_embeddings=options.token_embeddings)
    calibration = calibration or calibration_inputs(pairs=chain.kind is ChainKind.CROSS_ENCODER)
    spec = CalibrationSpec(source=str(options.calibration_data or "built-in"), samples=len(calibration),
                           sha256=inputs_digest(calibration))
    return Prepared(chain=chain, reference=ReferenceRuns(model), routes=routes, verbs=verb_routes(model, chain),
                    scoring=scoring, inputs=parity_inputs(chain.kind, routes, extra), calibration=calibration,
                    calibration_spec=spec, name=options.name or default_name(chain))


def parity_inputs(kind: ChainKind, routes: tuple[Any, ...], extra: list) -> list:
    """The built-in probes, sized by each route's own tokenizer and truncation length (texts at,
    below and above it), then the user's inputs."""
    from tokenizers import Tokenizer

    probes: dict[Any, None] = {}
    for route in routes:
        tokenizer, spec = Tokenizer.from_str(route.tokenizer_json), route.tokenizer

        def count(text: Any, tokenizer: Any = tokenizer, special: bool = spec.add_special_tokens) -> int:
            pair = (text,) if isinstance(text, str) else text
            return len(tokenizer.encode(*pair, add_special_tokens=special).ids)

        made = probe_pairs(count, spec.max_length) if kind is ChainKind.CROSS_ENCODER else \
            probe_texts(count, spec.max_length)
        probes.update(dict.fromkeys(made))
    return [*probes, *extra]


def default_name(chain: ChainSpec) -> str:
    """The source folder's or model's name, made safe for a directory name."""
    stem = chain.source.location.rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "model"

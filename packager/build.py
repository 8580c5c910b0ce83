"""Orchestration: source -> variants -> parity gate -> artifact -> registry.

Everything that can be refused is refused before the first export: unknown recipes, unreadable
validation data, unsafe or unsupported chains, an unusable registry.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packager.artifact import PARITY_FILE, copy_loader, import_loader, new_stage, publish, seal, write_json
from packager.chain import ChainSpec, check_compilable, load_reference, read_chain
from packager.errors import ExportError, ParityError, UsageError
from packager.exporters import RECIPES, Recipe
from packager.manifest_builder import build_manifest, scoring_spec, source_spec
from packager.registry import ModelStore, RegisteredVersion, open_store
from packager.runtime.manifest import ChainKind, Format, Manifest, OutputMeaning, Precision, ScoringSpec
from packager.validators.parity import check_parity
from packager.validators.report import Gate, ParityReport
from packager.validators.texts import probe_pairs, probe_texts, read_inputs

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# fp32 must reproduce the reference up to float rounding: a real mismatch fails.
DEFAULT_GATES: dict[tuple[ChainKind, Precision], Gate] = {
    (ChainKind.SENTENCE_TRANSFORMER, Precision.FP32): {"min_cosine": 0.99999, "max_rel_diff": 1e-4},
    (ChainKind.SPARSE_ENCODER, Precision.FP32): {"min_cosine": 0.99999, "max_rel_diff": 1e-4, "dot_rel_diff": 1e-4},
    (ChainKind.CROSS_ENCODER, Precision.FP32): {"logit_rel_diff": 1e-4, "score_rel_diff": 1e-4, "spearman_min": 0.99},
}


@dataclass(frozen=True)
class BuildOptions:
    formats: tuple[Format, ...] = (Format.ONNX,)
    precisions: tuple[Precision, ...] = (Precision.FP32,)
    out: Path = Path("dist")
    name: str | None = None
    revision: str | None = None
    register: str | None = None
    tracking_uri: str | None = None
    validation_data: Path | None = None
    token_embeddings: bool = False
    allow_parity_failure: bool = False
    trust_remote_code: bool = False
    allow_pickle: bool = False

    def __post_init__(self) -> None:
        if self.name is not None and not _NAME.fullmatch(self.name):
            raise UsageError(f"--name {self.name!r}: use letters, digits, '.', '_' and '-' (not first)")
        if not self.formats or not self.precisions:
            raise UsageError("at least one format and one precision are needed")


@dataclass
class VariantResult:
    format: Format
    precision: Precision
    artifact: Path
    manifest: Manifest
    parity: ParityReport
    seconds: float
    registered: RegisteredVersion | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format.value, "precision": self.precision.value, "artifact": str(self.artifact),
                "build_seconds": round(self.seconds, 2), "parity": self.parity.to_dict(),
                "registered": dataclasses.asdict(self.registered) if self.registered else None}


@dataclass
class BuildResult:
    source: str
    chain_kind: str
    variants: list[VariantResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "chain_kind": self.chain_kind,
                "variants": [v.to_dict() for v in self.variants]}


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
    name: str


def build(source: str, options: BuildOptions, *, store: ModelStore | None = None) -> BuildResult:
    """Build, validate and (optionally) register every requested variant of ``source``."""
    recipes = [RECIPES.get(f, p) for f in options.formats for p in options.precisions]
    chain = read_chain(source, revision=options.revision, trust_remote_code=options.trust_remote_code,
                       allow_pickle=options.allow_pickle)
    check_compilable(chain)
    extra = _validation_inputs(options.validation_data, chain.kind)
    if options.register:
        store = store or open_store(options.tracking_uri)
        store.ping()
    prepared = _prepare(chain, options, extra)
    result = BuildResult(source=chain.source.location, chain_kind=chain.kind.value)
    for recipe in recipes:
        variant = _build_variant(prepared, recipe, options)
        if options.register:
            variant.registered = store.register(variant.artifact, variant.manifest, options.register)
        result.variants.append(variant)
    return result


def validate(artifact: Path, source: str, *, validation_data: Path | None = None, trust_remote_code: bool = False,
             allow_pickle: bool = False) -> ParityReport:
    """Re-run the parity gate of a built artifact (through its own loader) against ``source``."""
    candidate = import_loader(artifact).load(artifact)
    manifest: Manifest = candidate.manifest
    chain = read_chain(source, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    extra = _validation_inputs(validation_data, chain.kind)
    if source_spec(chain).sha256 != manifest.source.sha256:
        log.warning("the reference's files differ from those %s was built from (%s)", artifact, manifest.source.location)
    reference = load_reference(chain)
    from packager.graph import compile_routes

    routes = compile_routes(reference, chain)
    token_embeddings = any(r.output(OutputMeaning.TOKEN_EMBEDDINGS) for r in manifest.routes)
    return check_parity(reference, candidate, _parity_inputs(chain.kind, routes, extra),
                        _gate(manifest.chain_kind, manifest.precision, token_embeddings))


def _validation_inputs(path: Path | None, kind: ChainKind) -> list:
    return read_inputs(path, pairs=kind is ChainKind.CROSS_ENCODER) if path else []


def _gate(kind: ChainKind, precision: Precision, token_embeddings: bool) -> Gate:
    gate = dict(DEFAULT_GATES[(kind, precision)])
    if token_embeddings:
        gate["token_min_cosine"] = gate["min_cosine"]
    return gate


def _prepare(chain: ChainSpec, options: BuildOptions, extra: list) -> _Prepared:
    from packager.graph import compile_routes, verb_routes

    log.info("loading the torch reference from %s", chain.source.location)
    reference = load_reference(chain)
    # An activation the runtime cannot apply is refused here, before any export.
    scoring = scoring_spec(reference) if chain.kind is ChainKind.CROSS_ENCODER else None
    routes = compile_routes(reference, chain, token_embeddings=options.token_embeddings)
    return _Prepared(chain=chain, reference=reference, routes=routes, verbs=verb_routes(reference, chain),
                     scoring=scoring, inputs=_parity_inputs(chain.kind, routes, extra),
                     name=options.name or _default_name(chain))


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


def _build_variant(prep: _Prepared, recipe: Recipe, options: BuildOptions) -> VariantResult:
    started = time.perf_counter()
    name = f"{prep.name}-{recipe.format.value}-{recipe.precision.value}"
    gate = _gate(prep.chain.kind, recipe.precision, options.token_embeddings)
    try:
        stage = new_stage(options.out, name)
    except OSError as e:
        raise ExportError(f"cannot create a staging directory in {options.out}: {e}") from e
    try:
        log.info("%s: exporting %d route(s) of the whole chain (%s)", name, len(prep.routes),
                 ", ".join(m.kind.value for m in prep.chain.all_modules()))
        draft = seal(stage, build_manifest(prep.chain, prep.reference, prep.routes, prep.verbs, prep.scoring,
                                           recipe, name, _write_routes(prep.routes, recipe, stage)))
        log.info("%s: parity gate (%s)", name, ", ".join(f"{k} {v}" for k, v in gate.items()))
        candidate = import_loader(stage).load(stage)
        report = check_parity(prep.reference, candidate, prep.inputs, gate)
        log.info("%s", report.describe())
        if not report.passed and not options.allow_parity_failure:
            raise ParityError(f"{name}: the artifact does not reproduce the reference; nothing was published.\n"
                              f"{report.describe()}", report)
        write_json(stage / PARITY_FILE, report.to_dict())
        final = seal(stage, dataclasses.replace(draft, parity=report.summary(gate)))
        target = options.out / name
        publish(stage, target, final)
    except OSError as e:  # disk full, permissions: nothing half-written is left behind
        raise ExportError(f"{name}: writing the artifact failed: {e}") from e
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    seconds = time.perf_counter() - started
    log.info("%s: published %s in %.1f s", name, target, seconds)
    return VariantResult(format=recipe.format, precision=recipe.precision, artifact=target, manifest=final,
                         parity=report, seconds=seconds)


def _write_routes(routes: tuple[Any, ...], recipe: Recipe, stage: Path) -> dict[str, tuple[str, str]]:
    """Export every route's graph and write its tokenizer (one file per distinct tokenizer, and
    the loader package; returns route -> (graph file, tokenizer file)."""
    files: dict[str, tuple[str, str]] = {}
    tokenizers: dict[str, str] = {}
    for route in routes:
        stem = "model" if len(routes) == 1 else re.sub(r"[^A-Za-z0-9._-]", "_", route.name)
        graph_file = recipe.export(route, stage, stem=stem)[0]
        if route.tokenizer_json not in tokenizers:
            tokenizer_file = "tokenizer.json" if not tokenizers else f"tokenizer.{stem}.json"
            (stage / tokenizer_file).write_text(route.tokenizer_json, encoding="utf-8")
            tokenizers[route.tokenizer_json] = tokenizer_file
        files[route.name] = (graph_file, tokenizers[route.tokenizer_json])
    copy_loader(stage)
    return files


def _default_name(chain: ChainSpec) -> str:
    stem = chain.source.location.rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "model"

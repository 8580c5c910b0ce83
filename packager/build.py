"""Orchestration: source -> variants -> parity gate -> artifact -> registry.

Everything that can be refused is refused before the first export: unknown recipes, unreadable
validation data, unsafe or unsupported chains, an unusable registry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import platform
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from packager.artifact import PARITY_FILE, copy_loader, import_loader, new_stage, publish, seal, write_json
from packager.chain import TOKENIZER_FILE, ChainSpec, check_compilable, load_reference, read_chain, resolve_tokenizer
from packager.errors import ExportError, ParityError, UsageError
from packager.exporters import RECIPES, Recipe
from packager.registry import ModelStore, RegisteredVersion, open_store
from packager.runtime.manifest import (
    SCHEMA_VERSION, Format, Manifest, ModuleEntry, OutputMeaning, ParityStatus, ParitySummary, Precision, RouteSpec, Similarity,
    SourceSpec, TokenizerSpec,
)
from packager.validators.parity import check_parity
from packager.validators.report import Gate, ParityReport
from packager.validators.texts import probe_texts, read_texts

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
DEFAULT_GATES = {Precision.FP32: Gate(min_cosine=0.99999)}
_TOOLS = ("chain-packager", "torch", "transformers", "sentence-transformers", "onnx", "onnxscript", "onnxruntime",
          "tokenizers", "numpy")


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
    """What every variant of one build shares: the chain, its reference and its graph."""

    chain: ChainSpec
    reference: Any
    route: Any
    tokenizer: TokenizerSpec
    tokenizer_json: str
    texts: list[str]
    name: str


def build(source: str, options: BuildOptions, *, store: ModelStore | None = None) -> BuildResult:
    """Build, validate and (optionally) register every requested variant of ``source``."""
    recipes = [RECIPES.get(f, p) for f in options.formats for p in options.precisions]
    extra_texts = read_texts(options.validation_data) if options.validation_data else []
    chain = read_chain(source, revision=options.revision, trust_remote_code=options.trust_remote_code,
                       allow_pickle=options.allow_pickle)
    check_compilable(chain)
    if options.register:
        store = store or open_store(options.tracking_uri)
        store.ping()
    prepared = _prepare(chain, options, extra_texts)
    result = BuildResult(source=chain.source.location, chain_kind=chain.kind.value)
    for recipe in recipes:
        variant = _build_variant(prepared, recipe, options)
        if options.register:
            variant.registered = store.register(variant.artifact, variant.manifest, options.register)
        result.variants.append(variant)
    return result


def _prepare(chain: ChainSpec, options: BuildOptions, extra_texts: list[str]) -> _Prepared:
    from packager.graph import compile_route

    log.info("loading the torch reference from %s", chain.source.location)
    reference = load_reference(chain)
    tokenizer, tokenizer_json = resolve_tokenizer(reference[0])
    route = compile_route(reference, include_token_embeddings=options.token_embeddings)
    return _Prepared(chain=chain, reference=reference, route=route, tokenizer=tokenizer, tokenizer_json=tokenizer_json,
                     texts=_parity_texts(reference, extra_texts), name=options.name or _default_name(chain))


def _parity_texts(reference: Any, extra_texts: list[str]) -> list[str]:
    """The built-in probes, sized by the reference's own tokenizer and max_seq_length, plus the user's texts."""
    tokenizer = reference[0].tokenizer
    return probe_texts(lambda t: len(tokenizer(t)["input_ids"]), reference.max_seq_length) + extra_texts


def validate(artifact: Path, source: str, *, validation_data: Path | None = None, trust_remote_code: bool = False,
             allow_pickle: bool = False) -> ParityReport:
    """Re-run the parity gate of a built artifact (through its own loader) against ``source``."""
    extra_texts = read_texts(validation_data) if validation_data else []
    candidate = import_loader(artifact).load(artifact)
    manifest: Manifest = candidate.manifest
    chain = read_chain(source, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    if _source_spec(chain).sha256 != manifest.source.sha256:
        log.warning("the reference's files differ from those %s was built from (%s)", artifact, manifest.source.location)
    reference = load_reference(chain)
    route = manifest.routes[0]
    gate = DEFAULT_GATES.get(manifest.precision, Gate())
    return check_parity(reference, candidate, _parity_texts(reference, extra_texts), gate, route=route.name,
                        token_embeddings=route.output(OutputMeaning.TOKEN_EMBEDDINGS) is not None)


def _build_variant(prep: _Prepared, recipe: Recipe, options: BuildOptions) -> VariantResult:
    started = time.perf_counter()
    name = f"{prep.name}-{recipe.format.value}-{recipe.precision.value}"
    gate = DEFAULT_GATES.get(recipe.precision, Gate())
    try:
        stage = new_stage(options.out, name)
    except OSError as e:
        raise ExportError(f"cannot create a staging directory in {options.out}: {e}") from e
    try:
        log.info("%s: exporting the whole chain (%s)", name, ", ".join(m.kind.value for m in prep.chain.modules))
        graph_file = recipe.export(prep.route, stage, stem="model")[0]
        (stage / TOKENIZER_FILE).write_text(prep.tokenizer_json, encoding="utf-8")
        copy_loader(stage)
        draft = seal(stage, _manifest(prep, recipe, graph_file, name))
        log.info("%s: parity gate (%s)", name, ", ".join(f"{k} >= {v}" for k, v in gate.as_dict().items()))
        candidate = import_loader(stage).load(stage)
        report = check_parity(prep.reference, candidate, prep.texts, gate, route=prep.route.name,
                              token_embeddings=options.token_embeddings)
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


def _manifest(prep: _Prepared, recipe: Recipe, graph_file: str, name: str) -> Manifest:
    reference, chain = prep.reference, prep.chain
    dimension = next(o for o in prep.route.outputs if o.name == "sentence_embedding").shape[-1]
    return Manifest(
        schema_version=SCHEMA_VERSION, name=name, chain_kind=chain.kind, format=recipe.format,
        precision=recipe.precision,
        modules=tuple(ModuleEntry(name=m.name, kind=m.kind, type=m.type) for m in chain.modules),
        routes=(RouteSpec(name=prep.route.name, graph=graph_file, inputs=prep.route.input_names,
                          outputs=prep.route.outputs, tokenizer=prep.tokenizer),),
        prompts=dict(reference.prompts), default_prompt_name=reference.default_prompt_name,
        similarity=Similarity(reference.similarity_fn_name), embedding_dimension=int(dimension),
        source=_source_spec(chain), tools=tool_versions(),
        parity=ParitySummary(status=ParityStatus.PENDING, texts=0, texts_sha256="", gate={}, metrics={}),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _source_spec(chain: ChainSpec) -> SourceSpec:
    combined = hashlib.sha256("".join(f"{f.path}\0{f.sha256}\n" for f in chain.files).encode()).hexdigest()
    src = chain.source
    return SourceSpec(kind=src.kind, location=src.location, revision=src.revision, sha256=combined, files=chain.files)


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in _TOOLS:
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return versions


def _default_name(chain: ChainSpec) -> str:
    stem = chain.source.location.rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "model"

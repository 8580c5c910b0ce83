"""The build side of the contract: everything the runtime needs, resolved once from the chain and
its loaded reference and written into the manifest (the runtime infers nothing)."""

from __future__ import annotations

import dataclasses
import hashlib
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from packager.chain import ChainSpec
from packager.errors import UnsupportedModuleError
from packager.exporters.recipe import Recipe
from packager.runtime.enums import Activation, ChainKind, ParityStatus, Similarity
from packager.runtime.manifest import (
    SCHEMA_VERSION,
    CalibrationSpec,
    EmbeddingRanges,
    Manifest,
    ModuleEntry,
    ParitySummary,
    RecipeSpec,
    ScoringSpec,
    SourceSpec,
    SparseSpec,
)
from packager.runtime.routes import RouteSpec, VerbSpec


@dataclass(frozen=True)
class RouteFiles:
    """Where one route's files are in the artifact."""

    graph: str
    tokenizer: str | None  # None for an image route
    chat_template: str | None = None

_TOOLS = ("chain-packager", "torch", "transformers", "sentence-transformers", "onnx", "onnxscript", "onnxruntime",
          "openvino", "nncf", "tokenizers", "numpy")
# torch activations a CrossEncoder may declare, by class name.
_ACTIVATIONS = {"Sigmoid": Activation.SIGMOID, "Identity": Activation.IDENTITY, "Softmax": Activation.SOFTMAX,
                "Tanh": Activation.TANH}


def build_manifest(chain: ChainSpec, reference: Any, *, routes: tuple[Any, ...], verbs: dict[str, VerbSpec],
                   scoring: ScoringSpec | None, recipe: Recipe, details: dict[str, str],
                   calibration: CalibrationSpec | None, name: str, files: dict[str, RouteFiles],
                   ranges: dict[str, EmbeddingRanges] | None = None) -> Manifest:
    """The manifest of one variant, its parity still pending. ``reference`` is the loaded torch
    model (prompts, similarity, sparse settings); ``files`` maps each route to its files in the
    artifact; ``details`` is what the recipe decided; ``ranges`` each verb's output ranges."""
    specs = tuple(RouteSpec(name=r.name, graph=files[r.name].graph, inputs=r.input_names, outputs=r.outputs,
                            tokenizer=dataclasses.replace(r.tokenizer, file=files[r.name].tokenizer)
                            if r.tokenizer else None,
                            chat=dataclasses.replace(r.chat, template=files[r.name].chat_template) if r.chat else None,
                            modality=r.modality, image=r.image, vision=r.vision)
                  for r in routes)
    embedding = chain.kind is not ChainKind.CROSS_ENCODER
    return Manifest(
        schema_version=SCHEMA_VERSION, name=name, chain_kind=chain.kind, format=recipe.format,
        precision=recipe.precision, recipe=RecipeSpec(name=recipe.name, details=dict(details)),
        calibration=calibration,
        modules=tuple(ModuleEntry(name=m.name, kind=m.kind, type=m.type) for m in chain.all_modules()),
        routes=specs, verbs=dict(verbs), prompts=dict(reference.prompts),
        default_prompt_name=reference.default_prompt_name,
        similarity=Similarity(reference.similarity_fn_name) if embedding else None,
        embedding_dimension=int(specs[0].outputs[0].shape[-1]) if embedding else None,
        scoring=scoring,
        sparse=_sparse(chain, reference, specs, verbs) if chain.kind is ChainKind.SPARSE_ENCODER else None,
        source=source_spec(chain), tools=tool_versions(),
        parity=ParitySummary(status=ParityStatus.PENDING, texts=0, texts_sha256="", gate={}, metrics={}),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        requires=(*(("jinja2",) if any(r.chat for r in specs) else ()),
                  *(("pillow",) if any(r.image for r in specs) else ())),
        embedding_ranges=dict(ranges or {}), int8_arithmetic=recipe.int8_arithmetic,
    )


def scoring_spec(reference: Any) -> ScoringSpec:
    activation = reference.activation_fn
    kind = _ACTIVATIONS.get(type(activation).__name__)
    if kind is Activation.SOFTMAX and getattr(activation, "dim", None) not in (None, -1, 1):
        kind = None
    if kind is None:
        raise UnsupportedModuleError(
            f"the CrossEncoder's activation {activation!r} has no torch-free equivalent; supported: "
            f"{', '.join(a.value for a in Activation)} (softmax over the labels)"
        )
    return ScoringSpec(num_labels=int(reference.num_labels), activation=kind)


def _sparse(chain: ChainSpec, reference: Any, routes: tuple[RouteSpec, ...], verbs: dict[str, VerbSpec]) -> SparseSpec:
    """Dimensions are vocabulary tokens (SPLADE, static weights), named by the document route's
    tokenizer, unless a sparse autoencoder makes them latent features without names; its k, fixed
    in the graph, is then the most dimensions the model can return."""
    ceiling = next((m.k for m in reference.modules() if type(m).__name__ == "SparseAutoEncoder"), None)
    document = (verbs.get("encode_document") or next(iter(verbs.values()))).route
    vocabulary = next(r.text.file for r in routes if r.name == document)
    return SparseSpec(max_active_dims=reference.max_active_dims, max_active_dims_ceiling=ceiling,
                      vocabulary=None if ceiling is not None else vocabulary)


def source_spec(chain: ChainSpec) -> SourceSpec:
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

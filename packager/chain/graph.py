"""Wrap each route of a loaded chain as a tensor-in, tensor-out torch module for export.

The wrapper runs the chain's *own* sentence-transformers modules, so the exported graph is the
reference computation itself (Pooling, Dense, LayerNorm, Normalize, LogitScore... included);
the modules the exporter cannot take as they are run through the export steps of ``steps``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch

from packager.chain.chat_template import resolve_chat
from packager.chain.image_processor import resolve_image_spec, sample_images
from packager.chain.processing import verb_spec
from packager.chain.spec import ChainSpec, ModuleSpec
from packager.chain.st_internals import resolve_route
from packager.chain.steps import SCORING_MASKS, PromptExcludingPooling, ScoringMasks, export_steps
from packager.chain.tokenizer import resolve_tokenizer
from packager.chain.vision_graph import QwenVisionLanguage, resolve_vision
from packager.errors import ArtifactIntegrityError, InvalidInputError, SourceError, UnsupportedModuleError
from packager.runtime.chat import ChatTemplate
from packager.runtime.enums import ChainKind, MessageFormat, Modality, ModuleKind, OutputMeaning
from packager.runtime.image_inputs import ImagePipeline
from packager.runtime.messages import conversation
from packager.runtime.routes import (
    INT32_LIMIT,
    PIXEL_VALUES,
    PROMPT_LENGTH,
    ChatSpec,
    ImageSpec,
    OutputSpec,
    TokenizerSpec,
    VerbSpec,
    VisionSpec,
)
from packager.runtime.text import EXPANSION_POSITIONS, TextEncoder
from packager.runtime.vision_route import VisionEncoder
from packager.runtime.words import WordTokenizer

log = logging.getLogger(__name__)

GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Samples of different lengths, so the exporter sees batch > 1 and padding, and keeps both axes dynamic.
_SAMPLE_TEXTS = ["A short text.", "A somewhat longer sample text, so that this batch needs padding."]
_SAMPLE_PAIRS = [("A short query.", "A somewhat longer document, so that this batch needs padding."),
                 ("Another query about something else?", "A short document.")]
_SAMPLE_WORDS = 7
# What each chain kind returns: (feature key written by the last module, meaning in the manifest).
_OUTPUTS = {
    ChainKind.SENTENCE_TRANSFORMER: ("sentence_embedding", OutputMeaning.SENTENCE_EMBEDDING),
    ChainKind.SPARSE_ENCODER: ("sentence_embedding", OutputMeaning.SPARSE_EMBEDDING),
    ChainKind.CROSS_ENCODER: ("scores", OutputMeaning.SCORES),
    ChainKind.MULTI_VECTOR_ENCODER: ("token_embeddings", OutputMeaning.TOKEN_EMBEDDINGS),
}
# Which route each verb runs, by the task sentence-transformers passes to a Router.
_ENCODE_TASKS: dict[str, str | None] = {"encode": None, "encode_query": "query", "encode_document": "document"}
_VERB_TASKS: dict[ChainKind, dict[str, str | None]] = {
    ChainKind.SENTENCE_TRANSFORMER: _ENCODE_TASKS, ChainKind.SPARSE_ENCODER: _ENCODE_TASKS,
    ChainKind.MULTI_VECTOR_ENCODER: _ENCODE_TASKS, ChainKind.CROSS_ENCODER: {"predict": None},
}


class ChainGraph(torch.nn.Module):
    """``forward(*tensors) -> tuple of outputs`` over one route's modules.

    sentence-transformers' feature dicts carry non-tensor keys (``modality``, ``logits_to_keep``);
    they are set here as constants and never become graph inputs.
    """

    def __init__(self, steps: list[torch.nn.Module], input_names: tuple[str, ...], output_keys: tuple[str, ...],
                 constants: dict[str, Any]) -> None:
        super().__init__()
        self.steps = torch.nn.ModuleList(steps)
        self.input_names = input_names
        self.output_keys = output_keys
        self.constants = constants

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features: dict[str, Any] = {**self.constants, **dict(zip(self.input_names, tensors, strict=True))}
        for step in self.steps:
            features = step(features)
        return tuple(features[key] for key in self.output_keys)


@dataclass(frozen=True)
class RouteGraph:
    name: str
    modules: tuple[ModuleSpec, ...]
    module: ChainGraph
    input_names: tuple[str, ...]
    outputs: tuple[OutputSpec, ...]
    sample_inputs: tuple[torch.Tensor, ...]
    tokenizer: TokenizerSpec | None  # a text route's tokenizer (None for an image route)...
    tokenizer_json: str | None
    chat: ChatSpec | None  # the route's texts go through this chat template
    chat_template: str | None  # its source
    encoder: TextEncoder | None  # the runtime's own tokenizer (and renderer) for this route
    modality: Modality = Modality.TEXT
    image: ImageSpec | None = None  # ...an image route's preprocessing (or a vision-language route's images)
    vision: VisionSpec | None = None  # a vision-language route's model settings

    @property
    def parameter_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.module.parameters())


def compile_routes(reference: Any, chain: ChainSpec, *, token_embeddings: bool = False) -> tuple[RouteGraph, ...]:
    """One graph per route: the Router's routes, or the whole chain as the default route. Routes
    of an embedding model must embed into one space (similarity compares across them)."""
    routes = tuple(_compile_route(name, chain.kind, specs=specs, modules=_route_modules(reference, chain, name),
                                  token_embeddings=token_embeddings,
                                  image=chain.takes_images and name == Modality.IMAGE.value)
                   for name, specs in chain.pipelines().items())
    dimensions = {r.name: r.outputs[0].shape[-1] for r in routes}
    if chain.kind is not ChainKind.CROSS_ENCODER and len(set(dimensions.values())) > 1:
        raise UnsupportedModuleError(f"routes embed into different dimensions {dimensions}")
    return routes


def verb_specs(reference: Any, chain: ChainSpec) -> dict[str, VerbSpec]:
    """What each verb runs, as sentence-transformers resolves it: the route (a Router's mappings
    and default route), the task, and the input module's truncation and query expansion for that
    task. A verb with no route is left out and raises a clear error at run time."""
    tasks = _VERB_TASKS[chain.kind]
    at = chain.router_index()
    pipelines = chain.pipelines()
    verbs = {}
    for verb, task in tasks.items():
        if at is None:
            route = next(iter(pipelines))  # a CLIP-style chain's first route is its text route
        else:
            try:
                route = resolve_route(reference[at], task=task, modality="text")  # what Router.forward would pick
            except ValueError:
                continue
        spec = pipelines[route][0]
        verbs[verb] = verb_spec(_route_modules(reference, chain, route)[0], route=route, task=task,
                                chat="message" in (spec.config.get("modality_config") or {}))
        if chain.takes_images:
            verbs[verb] = dataclasses.replace(verbs[verb], image_route=Modality.IMAGE.value)
        if chain.kind is ChainKind.MULTI_VECTOR_ENCODER:
            mask = SCORING_MASKS["query" if task == "query" else "document"]
            verbs[verb] = dataclasses.replace(verbs[verb], scoring_mask=mask)
    if not verbs:
        raise UnsupportedModuleError(f"the Router resolves no route for {', '.join(tasks)}")
    return verbs


def _route_modules(reference: Any, chain: ChainSpec, route: str) -> list[Any]:
    """The loaded modules of one route: the Router's route in place of the Router."""
    modules = list(reference)
    at = chain.router_index()
    return modules if at is None else [*modules[:at], *modules[at].sub_modules[route], *modules[at + 1 :]]


def _compile_route(name: str, kind: ChainKind, *, specs: tuple[ModuleSpec, ...], modules: list[Any],
                   token_embeddings: bool, image: bool = False) -> RouteGraph:
    if image:
        return _compile_image_route(name, kind, specs=specs, modules=modules)
    if specs[0].takes_vision_messages:
        return _compile_vision_route(name, kind, specs=specs, modules=modules)
    input_module, input_spec = modules[0], specs[0]
    tokenizer, tokenizer_json = resolve_tokenizer(input_spec, input_module)  # settings checked before they are used
    encoder, chat = _encoder(name, input_spec, input_module, tokenizer, tokenizer_json)
    samples = _samples(kind, encoder)
    check_renders(name, encoder, samples)  # before the reference renders anything with its template
    features = _sample_features(name, input_spec, input_module, encoder, samples)
    input_names = _graph_inputs(input_spec, input_module, features)
    sample = [features[n] for n in input_names]
    steps = export_steps(specs, modules)
    if any(isinstance(step, PromptExcludingPooling) for step in steps):
        input_names += (PROMPT_LENGTH,)
        sample.append(torch.ones(len(sample[0]), dtype=torch.int64))
    key, meaning = _OUTPUTS[kind]
    keys: tuple[str, ...] = (key, "token_embeddings") if token_embeddings and kind is ChainKind.SENTENCE_TRANSFORMER \
        else (key,)
    if kind is ChainKind.MULTI_VECTOR_ENCODER:
        if not any(isinstance(step, ScoringMasks) for step in steps):
            steps.append(ScoringMasks(None))
        elif getattr(input_module, "query_expansion", None) is not None:  # MultiVectorMask scores expansion tokens
            input_names += (EXPANSION_POSITIONS,)
            sample.append(torch.zeros_like(sample[0], dtype=torch.bool))
        keys = (key, *SCORING_MASKS.values())
    constants = {k: v for k, v in features.items() if not isinstance(v, torch.Tensor) and k != PROMPT_LENGTH}
    graph = ChainGraph(steps, input_names, keys, constants).eval()
    values = _run(name, specs, kind, graph, sample)
    if len(steps) < len(modules):  # a sliced head: it must compute what the whole head computes
        whole = ChainGraph(export_steps(specs, modules, slice_head=False), input_names, keys, constants).eval()
        expected = _run(name, specs, kind, whole, sample)
        if torch.allclose(values[0], expected[0], rtol=1e-4, atol=1e-5 * max(1.0, float(expected[0].abs().max()))):
            log.info("route %r: the language-model head computes only the rows LogitScore reads", name)
        else:
            log.warning("route %r: the sliced language-model head differs from the whole head on the samples; "
                        "exporting the whole head", name)
            graph, values = whole, expected
    return RouteGraph(name=name, modules=specs, module=graph, input_names=input_names,
                      outputs=_output_specs(keys, values, meaning),
                      sample_inputs=tuple(sample), tokenizer=tokenizer, tokenizer_json=tokenizer_json,
                      chat=chat[0] if chat else None, chat_template=chat[1] if chat else None, encoder=encoder)


def _compile_image_route(name: str, kind: ChainKind, *, specs: tuple[ModuleSpec, ...],
                         modules: list[Any]) -> RouteGraph:
    """A CLIP-style chain's image side: pixel values in (the runtime makes them as the reference's
    image processor does, by ``ImageSpec``), the chain's embedding out."""
    image = resolve_image_spec(name, modules[0])
    try:
        features = modules[0].preprocess(sample_images())
    except Exception as e:  # the saved chain's own processor, on two ordinary images
        raise SourceError(f"route {name!r}: the reference cannot preprocess a sample image: {type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''}") from e
    input_names = (PIXEL_VALUES,)
    sample = [features[PIXEL_VALUES]]
    key, meaning = _OUTPUTS[kind]
    constants = {k: v for k, v in features.items() if not isinstance(v, torch.Tensor)}
    graph = ChainGraph(export_steps(specs, modules), input_names, (key,), constants).eval()
    values = _run(name, specs, kind, graph, sample)
    return RouteGraph(name=name, modules=specs, module=graph, input_names=input_names,
                      outputs=_output_specs((key,), values, meaning), sample_inputs=tuple(sample), tokenizer=None,
                      tokenizer_json=None, chat=None, chat_template=None, encoder=None, modality=Modality.IMAGE,
                      image=image)


def _compile_vision_route(name: str, kind: ChainKind, *, specs: tuple[ModuleSpec, ...],
                          modules: list[Any]) -> RouteGraph:
    """A Qwen-VL chain's message route: ids and patches in (the runtime makes them as the saved
    processor does, by the route's tokenizer, chat template, ``ImageSpec`` and ``VisionSpec``),
    the chain's output out. Traced with the runtime's own inputs for a text, an image and a text
    with an image (a batch with padding, and images of two sizes)."""
    input_module, input_spec = modules[0], specs[0]
    tokenizer, tokenizer_json = resolve_tokenizer(input_spec, input_module)
    encoder, chat = _encoder(name, input_spec, input_module, tokenizer, tokenizer_json)
    image, vision = resolve_image_spec(name, input_module), resolve_vision(name, input_module)
    assert chat is not None  # a message route has a template (resolve_chat refuses one without)
    if chat[0].message_format is not MessageFormat.STRUCTURED:
        raise UnsupportedModuleError(f"route {name!r}: a Qwen-VL Transformer with {chat[0].message_format.value} "
                                     "messages; its images are parts of structured messages")
    runtime = VisionEncoder(encoder, ImagePipeline(image), vision)
    first, second = sample_images()
    conversations = [conversation(item, i, None) for i, item in enumerate(
        [_SAMPLE_TEXTS[1], first, {"text": _SAMPLE_TEXTS[0], "image": second}])]
    try:  # all three in one batch, whatever the runtime's token budget
        (_, feeds), = runtime.batches(conversations, batch_size=len(conversations), max_length=tokenizer.max_length,
                                      task=None, max_tokens=INT32_LIMIT)
    except InvalidInputError as e:
        raise UnsupportedModuleError(f"route {name!r}: the chat template cannot be compiled: {e}") from None
    step = QwenVisionLanguage(input_module, vision)
    sample = [torch.from_numpy(feeds[n]) for n in step.input_names]
    key, meaning = _OUTPUTS[kind]
    graph = ChainGraph([step, *export_steps(specs[1:], modules[1:], prompt_length=False)], step.input_names, (key,),
                       {}).eval()
    values = _run(name, specs, kind, graph, sample)
    return RouteGraph(name=name, modules=specs, module=graph, input_names=step.input_names,
                      outputs=_output_specs((key,), values, meaning), sample_inputs=tuple(sample), tokenizer=tokenizer,
                      tokenizer_json=tokenizer_json, chat=chat[0], chat_template=chat[1], encoder=encoder, image=image,
                      vision=vision)


def _output_specs(keys: tuple[str, ...], values: tuple[torch.Tensor, ...],
                  meaning: OutputMeaning) -> tuple[OutputSpec, ...]:
    """The graph's outputs: the chain kind's own (named by its meaning), then token embeddings if
    exported beside a sentence embedding, or a multi-vector encoder's scoring masks."""
    def axes(value: torch.Tensor) -> tuple[int | str, ...]:
        return ("batch", "sequence", int(value.shape[-1])) if value.dim() == 3 else ("batch", int(value.shape[-1]))

    outputs = [OutputSpec(name=meaning.value, meaning=meaning, shape=axes(values[0]))]
    for key, value in zip(keys[1:], values[1:], strict=True):
        if key in SCORING_MASKS.values():
            outputs.append(OutputSpec(name=key, meaning=OutputMeaning.SCORING_MASK, shape=("batch", "sequence")))
        else:
            outputs.append(OutputSpec(name=key, meaning=OutputMeaning(key), shape=axes(value)))
    return tuple(outputs)


def _encoder(name: str, spec: ModuleSpec, module: Any, tokenizer: TokenizerSpec,
             tokenizer_json: str) -> tuple[TextEncoder, tuple[ChatSpec, str] | None]:
    """The runtime's encoder for this route, made from what the artifact will hold."""
    from tokenizers import Tokenizer

    if tokenizer.words is not None:
        words = WordTokenizer.from_str(tokenizer_json, tokenizer.words, where=f"route {name!r}: vocabulary")
        return TextEncoder(words, tokenizer, GRAPH_INPUTS), None
    chat = resolve_chat(spec, module)
    try:
        template = ChatTemplate(chat[1], chat[0], where=f"route {name!r}: chat template") if chat else None
    except ArtifactIntegrityError as e:  # the runtime's refusal of a template, at build time a source problem
        raise UnsupportedModuleError(str(e)) from None
    return TextEncoder(Tokenizer.from_str(tokenizer_json), tokenizer, GRAPH_INPUTS, template), chat


def check_renders(route: str, encoder: TextEncoder, inputs: list, **call: Any) -> None:
    """Every input through the route's bounded chat template (if any), so a template that fails or
    exceeds its bounds is refused here, before the reference's unbounded renderer meets it."""
    if encoder.chat is None:
        return
    try:
        for item in inputs:
            encoder.count(item, **call)
    except InvalidInputError as e:
        raise UnsupportedModuleError(f"route {route!r}: the chat template cannot be compiled: {e}") from None


def _samples(kind: ChainKind, encoder: TextEncoder) -> list[Any]:
    """The texts a route is traced with, of different lengths so that the exporter keeps the batch and
    sequence axes dynamic; for a word tokenizer, made of its vocabulary's own words (the standard
    samples may hold none of a small vocabulary's words, and a width of one is frozen)."""
    tokenizer: Any = encoder.tokenizer
    if not isinstance(tokenizer, WordTokenizer):
        return list(_SAMPLE_PAIRS if kind is ChainKind.CROSS_ENCODER else _SAMPLE_TEXTS)
    words = tokenizer.sample_words(_SAMPLE_WORDS)
    if not words:
        raise UnsupportedModuleError("no word of the vocabulary tokenizes to itself (all stop words?), so no text "
                                     "would embed to anything but zeros")
    return [" ".join(words[:3]), " ".join((words * _SAMPLE_WORDS)[:_SAMPLE_WORDS])]


def _sample_features(name: str, spec: ModuleSpec, module: Any, encoder: TextEncoder, samples: list) -> dict[str, Any]:
    """The features the route's graph is traced with: the reference's own preprocessing, or for a
    StaticEmbedding (whose EmbeddingBag takes flat ids and offsets) or a BoW (which makes its vector
    in preprocess) the runtime's padded ids."""
    if spec.kind in (ModuleKind.STATIC_EMBEDDING, ModuleKind.BOW):
        tokens, _ = encoder.encode(samples, max_length=encoder.spec.max_length)
        return {k: torch.from_numpy(v) for k, v in encoder.pad(tokens).items()}
    try:
        return module.preprocess(samples)
    except Exception as e:  # the saved chain's own code, on two ordinary texts
        raise SourceError(f"route {name!r}: the reference cannot tokenize a sample text: {type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''}") from e


def _run(name: str, specs: tuple[ModuleSpec, ...], kind: ChainKind, graph: ChainGraph,
         sample: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    try:
        with torch.no_grad():
            return graph(*sample)
    except KeyError as e:
        raise UnsupportedModuleError(f"route {name!r} ({' -> '.join(s.kind.value for s in specs)}) produces no "
                                     f"{e.args[0]!r}, which a {kind.value} must output") from None


def _graph_inputs(spec: ModuleSpec, module: Any, features: dict[str, Any]) -> tuple[str, ...]:
    """The tensors the reference actually feeds the route: what the tokenizer produces, minus what
    the model's forward does not take (token_type_ids for RoBERTa-likes; a static sparse
    embedding reads ids and mask only)."""
    static = spec.kind in (ModuleKind.SPARSE_STATIC_EMBEDDING, ModuleKind.STATIC_EMBEDDING,
                           ModuleKind.WORD_EMBEDDINGS, ModuleKind.BOW)
    accepted: set[str] | None = {"input_ids", "attention_mask"} if static \
        else getattr(module, "model_forward_params", None)  # None: the model takes **kwargs
    return tuple(k for k in GRAPH_INPUTS if k in features and (accepted is None or k in accepted))

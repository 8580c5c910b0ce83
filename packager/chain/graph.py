"""Wrap each route of a loaded chain as a tensor-in, tensor-out torch module for export.

The wrapper runs the chain's *own* sentence-transformers modules, so the exported graph is the
reference computation itself (Pooling, Dense, LayerNorm, Normalize, LogitScore... included);
the three modules that branch on Python values run through the export steps of ``steps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from packager.chain.spec import DEFAULT_ROUTE, ChainSpec, ModuleSpec
from packager.chain.steps import PromptExcludingPooling, export_step
from packager.chain.tokenizer import resolve_tokenizer
from packager.errors import SourceError, UnsupportedModuleError
from packager.runtime.manifest import PROMPT_LENGTH, ChainKind, ModuleKind, OutputMeaning, OutputSpec, TokenizerSpec

GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Samples of different lengths, so the exporter sees batch > 1 and padding, and keeps both axes dynamic.
_SAMPLE_TEXTS = ["A short text.", "A somewhat longer sample text, so that this batch needs padding."]
_SAMPLE_PAIRS = [("A short query.", "A somewhat longer document, so that this batch needs padding."),
                 ("Another query about something else?", "A short document.")]
# What each chain kind returns: (feature key written by the last module, meaning in the manifest).
_OUTPUTS = {
    ChainKind.SENTENCE_TRANSFORMER: ("sentence_embedding", OutputMeaning.SENTENCE_EMBEDDING),
    ChainKind.SPARSE_ENCODER: ("sentence_embedding", OutputMeaning.SPARSE_EMBEDDING),
    ChainKind.CROSS_ENCODER: ("scores", OutputMeaning.SCORES),
}
# Which route each verb runs, by the task sentence-transformers passes to a Router.
_ENCODE_TASKS: dict[str, str | None] = {"encode": None, "encode_query": "query", "encode_document": "document"}
_VERB_TASKS: dict[ChainKind, dict[str, str | None]] = {
    ChainKind.SENTENCE_TRANSFORMER: _ENCODE_TASKS, ChainKind.SPARSE_ENCODER: _ENCODE_TASKS,
    ChainKind.CROSS_ENCODER: {"predict": None},
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
    tokenizer: TokenizerSpec
    tokenizer_json: str

    @property
    def parameter_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.module.parameters())


def compile_routes(reference: Any, chain: ChainSpec, *, token_embeddings: bool = False) -> tuple[RouteGraph, ...]:
    """One graph per route: the Router's routes, or the whole chain as the default route. Routes
    of an embedding model must embed into one space (similarity compares across them)."""
    routes = tuple(_compile_route(name, chain.kind, specs=specs, modules=_route_modules(reference, name),
                                  token_embeddings=token_embeddings)
                   for name, specs in chain.pipelines().items())
    dimensions = {r.name: r.outputs[0].shape[-1] for r in routes}
    if chain.kind is not ChainKind.CROSS_ENCODER and len(set(dimensions.values())) > 1:
        raise UnsupportedModuleError(f"routes embed into different dimensions {dimensions}")
    return routes


def verb_routes(reference: Any, chain: ChainSpec) -> dict[str, str]:
    """The route each verb runs, as sentence-transformers resolves it (a Router's mappings and
    default route); a verb with no route is left out and raises a clear error at run time."""
    tasks = _VERB_TASKS[chain.kind]
    router = reference[0] if chain.modules[0].kind is ModuleKind.ROUTER else None
    if router is None:
        return {verb: DEFAULT_ROUTE for verb in tasks}
    verbs = {}
    for verb, task in tasks.items():
        try:
            verbs[verb] = router._resolve_route(task=task, modality="text")  # what Router.forward would pick
        except ValueError:
            continue
    if not verbs:
        raise UnsupportedModuleError(f"the Router resolves no route for {', '.join(tasks)}")
    return verbs


def _route_modules(reference: Any, route: str) -> list[Any]:
    first, *rest = list(reference)
    sub_modules = getattr(first, "sub_modules", None)  # a Router
    return [*sub_modules[route], *rest] if sub_modules is not None else [first, *rest]


def _compile_route(name: str, kind: ChainKind, *, specs: tuple[ModuleSpec, ...], modules: list[Any],
                   token_embeddings: bool) -> RouteGraph:
    input_module, input_spec = modules[0], specs[0]
    tokenizer, tokenizer_json = resolve_tokenizer(input_spec, input_module)  # settings checked before they are used
    try:
        features = input_module.preprocess(list(_SAMPLE_PAIRS if kind is ChainKind.CROSS_ENCODER else _SAMPLE_TEXTS))
    except Exception as e:  # the saved chain's own code, on two ordinary texts
        raise SourceError(f"route {name!r}: the reference cannot tokenize a sample text: {type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''}") from e
    input_names = _graph_inputs(input_spec, input_module, features)
    sample = [features[n] for n in input_names]
    steps = [export_step(spec, module) for spec, module in zip(specs, modules, strict=True)]
    if any(isinstance(step, PromptExcludingPooling) for step in steps):
        input_names += (PROMPT_LENGTH,)
        sample.append(torch.ones(len(sample[0]), dtype=torch.int64))
    key, meaning = _OUTPUTS[kind]
    keys = (key, "token_embeddings") if token_embeddings and kind is ChainKind.SENTENCE_TRANSFORMER else (key,)
    constants = {k: v for k, v in features.items() if not isinstance(v, torch.Tensor) and k != PROMPT_LENGTH}
    graph = ChainGraph(steps, input_names, keys, constants).eval()
    try:
        with torch.no_grad():
            values = graph(*sample)
    except KeyError as e:
        raise UnsupportedModuleError(f"route {name!r} ({' -> '.join(s.kind.value for s in specs)}) produces no "
                                     f"{e.args[0]!r}, which a {kind.value} must output") from None
    outputs = [OutputSpec(name=meaning.value, meaning=meaning, shape=("batch", int(values[0].shape[-1])))]
    if len(keys) > 1:
        outputs.append(OutputSpec(name=OutputMeaning.TOKEN_EMBEDDINGS.value, meaning=OutputMeaning.TOKEN_EMBEDDINGS,
                                  shape=("batch", "sequence", int(values[1].shape[-1]))))
    return RouteGraph(name=name, modules=specs, module=graph, input_names=input_names, outputs=tuple(outputs),
                      sample_inputs=tuple(sample), tokenizer=tokenizer, tokenizer_json=tokenizer_json)


def _graph_inputs(spec: ModuleSpec, module: Any, features: dict[str, Any]) -> tuple[str, ...]:
    """The tensors the reference actually feeds the route: what the tokenizer produces, minus what
    the model's forward does not take (token_type_ids for RoBERTa-likes; a static sparse
    embedding reads ids and mask only)."""
    accepted: set[str] | None = {"input_ids", "attention_mask"} if spec.kind is ModuleKind.SPARSE_STATIC_EMBEDDING \
        else getattr(module, "model_forward_params", None)  # None: the model takes **kwargs
    return tuple(k for k in GRAPH_INPUTS if k in features and (accepted is None or k in accepted))

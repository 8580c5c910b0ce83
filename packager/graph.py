"""Wrap each route of a loaded chain as a tensor-in, tensor-out torch module for export.

The wrapper runs the chain's *own* sentence-transformers modules, so the exported graph is the
reference computation itself (Pooling, Dense, LayerNorm, Normalize, LogitScore... included).
Three modules branch on Python values that the exporter would freeze to the sample's shapes;
they run through small export steps that call the module's own code where it can (see below),
and the parity gate proves each step equal to the module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from packager.chain import DEFAULT_ROUTE, ChainSpec, ModuleSpec
from packager.errors import SourceError, UnsupportedModuleError
from packager.runtime.manifest import ChainKind, ModuleKind, OutputMeaning, OutputSpec, Side, TokenizerSpec

GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PROMPT_LENGTH = "prompt_length"
# Samples of different lengths, so the exporter sees batch > 1 and padding, and keeps both axes dynamic.
_SAMPLE_TEXTS = ["A short text.", "A somewhat longer sample text, so that this batch needs padding."]
_SAMPLE_PAIRS = [("A short query.", "A somewhat longer document, so that this batch needs padding."),
                 ("Another query about something else?", "A short document.")]
# Tokenizers with no length limit (model_max_length unset) truncate at this, i.e. never.
NO_LENGTH_LIMIT = 2**31 - 1
# What each chain kind returns: (feature key written by the last module, meaning in the manifest).
_OUTPUTS = {
    ChainKind.SENTENCE_TRANSFORMER: ("sentence_embedding", OutputMeaning.SENTENCE_EMBEDDING),
    ChainKind.SPARSE_ENCODER: ("sentence_embedding", OutputMeaning.SPARSE_EMBEDDING),
    ChainKind.CROSS_ENCODER: ("scores", OutputMeaning.SCORES),
}
# Which route each verb runs, by the task sentence-transformers passes to a Router.
_ENCODE_TASKS = {"encode": None, "encode_query": "query", "encode_document": "document"}
_VERB_TASKS = {ChainKind.SENTENCE_TRANSFORMER: _ENCODE_TASKS, ChainKind.SPARSE_ENCODER: _ENCODE_TASKS,
               ChainKind.CROSS_ENCODER: {"predict": None}}


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
        features: dict[str, Any] = {**self.constants, **dict(zip(self.input_names, tensors))}
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
    routes = tuple(_compile_route(name, chain.kind, specs, _route_modules(reference, name), token_embeddings)
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


def _route_modules(reference: Any, route: str) -> list[torch.nn.Module]:
    first, *rest = list(reference)
    sub_modules = getattr(first, "sub_modules", None)  # a Router
    return [*sub_modules[route], *rest] if sub_modules is not None else [first, *rest]


def _compile_route(name: str, kind: ChainKind, specs: tuple[ModuleSpec, ...], modules: list[torch.nn.Module],
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
    steps = [_export_step(spec, module) for spec, module in zip(specs, modules, strict=True)]
    if any(isinstance(step, _PromptExcludingPooling) for step in steps):
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
    if spec.kind is ModuleKind.SPARSE_STATIC_EMBEDDING:
        accepted = {"input_ids", "attention_mask"}
    else:
        accepted = getattr(module, "model_forward_params", None)  # None: the model takes **kwargs
    return tuple(k for k in GRAPH_INPUTS if k in features and (accepted is None or k in accepted))


def resolve_tokenizer(spec: ModuleSpec, module: Any) -> tuple[TokenizerSpec, str]:
    """The tokenizer exactly as the reference calls it: its backend tokenizer (with any
    do_lower_case normalizer sentence-transformers added) and the call-time settings
    (max_seq_length, not model_max_length from the file; sides; special tokens)."""
    tokenizer = getattr(module, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UnsupportedModuleError(f"module {spec.name!r}: its tokenizer ({type(tokenizer).__name__}) has no fast "
                                     "(tokenizers) backend; the runtime needs tokenizer.json")
    overrides = {k: v for k, v in (getattr(module, "processing_kwargs", None) or {}).items() if v}
    if overrides:
        raise UnsupportedModuleError(f"module {spec.name!r} sets processing_kwargs {sorted(overrides)}; call-time "
                                     "tokenizer overrides are not compiled yet")
    max_length = module.max_seq_length
    if max_length is None:
        raise UnsupportedModuleError(f"module {spec.name!r} has no max_seq_length; set one in its config")
    if type(max_length) is not int or max_length < 1:
        raise SourceError(f"module {spec.name!r}: max_seq_length must be a positive integer, got {max_length!r} "
                          "(from its config or its tokenizer's model_max_length)")
    limit = _position_limit(module)
    if limit is not None and max_length > limit:
        raise SourceError(f"module {spec.name!r}: max_seq_length {max_length} exceeds the {limit} positions its model "
                          f"embeds, so longer texts would fail in the reference too; set max_seq_length <= {limit}")
    static = spec.kind is ModuleKind.SPARSE_STATIC_EMBEDDING
    return TokenizerSpec(
        file="tokenizer.json",  # renamed per route by the build when routes differ
        max_length=min(max_length, NO_LENGTH_LIMIT),
        truncation_side=Side(tokenizer.truncation_side),
        padding_side=Side(tokenizer.padding_side),
        pad_id=int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
        pad_type_id=int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
        pad_token=str(tokenizer.pad_token or ""),
        lowercase=_lowercases(backend.normalizer),
        add_special_tokens=not static,  # SparseStaticEmbedding tokenizes without special tokens
        special_ids=tuple(sorted(int(i) for i in tokenizer.all_special_ids)),
    ), _without_call_settings(backend)


def _position_limit(module: Any) -> int | None:
    """How many tokens a model with learned absolute positions takes (RoBERTa-likes count from
    the padding index + 1); None for rotary or relative positions, which have no table."""
    model = getattr(getattr(module, "auto_model", None), "base_model", None)
    embeddings = getattr(model, "embeddings", None)
    table = getattr(embeddings, "position_embeddings", None)
    if not isinstance(table, torch.nn.Embedding):
        return None
    padding_idx = getattr(embeddings, "padding_idx", None)
    return table.num_embeddings - (padding_idx + 1 if isinstance(padding_idx, int) else 0)


def _without_call_settings(backend: Any) -> str:
    """tokenizer.json without truncation/padding sections: transformers sets those per call, so
    the saved ones are stale; the runtime applies the manifest's instead."""
    from tokenizers import Tokenizer

    clean = Tokenizer.from_str(backend.to_str())
    clean.no_truncation()
    clean.no_padding()
    return clean.to_str()


def _lowercases(normalizer: Any) -> bool:
    from tokenizers import normalizers

    if isinstance(normalizer, normalizers.Sequence):
        return any(_lowercases(n) for n in normalizer)
    return isinstance(normalizer, normalizers.Lowercase) or bool(getattr(normalizer, "lowercase", False))


def _export_step(spec: ModuleSpec, module: torch.nn.Module) -> torch.nn.Module:
    if spec.kind is ModuleKind.SPLADE_POOLING:
        return _SpladePooling(module)
    if spec.kind is ModuleKind.SPARSE_AUTO_ENCODER:
        return _SparseAutoEncoder(module)
    if spec.kind is ModuleKind.POOLING and not module.include_prompt:
        if not (hasattr(module, "_forward_padded") and hasattr(module, "_exclude_prompt_from_mask")):
            raise UnsupportedModuleError(f"module {spec.name!r}: this sentence-transformers version's Pooling lacks "
                                         "the methods include_prompt=False is exported through")
        return _PromptExcludingPooling(module)
    return module


class _SpladePooling(torch.nn.Module):
    """SpladePooling without its Python loop over sequence chunks (a loop over the length freezes
    the sequence axis at export): log1p(relu(logits * mask)), once more log1p for log1p_relu,
    then max or sum over the tokens: the module's arithmetic in one chunk."""

    def __init__(self, pooling: torch.nn.Module) -> None:
        super().__init__()
        self.pooling = pooling

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        logits = features["token_embeddings"]
        mask = features["attention_mask"].unsqueeze(-1).to(logits.dtype)
        weights = torch.log1p(torch.relu(logits * mask))
        if self.pooling.activation_function == "log1p_relu":
            weights = torch.log1p(weights)
        pooled = weights.amax(dim=1) if self.pooling.pooling_strategy == "max" else weights.sum(dim=1)
        features["sentence_embedding"] = pooled
        return features


class _SparseAutoEncoder(torch.nn.Module):
    """SparseAutoEncoder's inference path through its own methods: the module picks that path by
    torch.is_inference_mode_enabled(), which tracing for export does not set."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        encoder = self.encoder
        prepared, _ = encoder.prepare(features["sentence_embedding"])
        latents, _ = encoder.top_k(encoder.encode_pre_act(prepared), encoder.k, compute_aux=False)
        features["sentence_embedding"] = latents
        return features


class _PromptExcludingPooling(torch.nn.Module):
    """Pooling with include_prompt=False. sentence-transformers reads the prompt length as a Python
    int and branches on it; here it is the graph input ``prompt_length`` ([batch], 0 for no
    prompt). The excluded mask follows the module's own left-padding-aware rule in tensor ops,
    and the module's own pooling code, handed that mask, does the rest."""

    def __init__(self, pooling: torch.nn.Module) -> None:
        super().__init__()
        self.pooling = pooling

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        pooling, mask = self.pooling, features["attention_mask"]
        pad = mask.to(torch.int32).argmax(dim=1)
        positions = torch.arange(mask.size(1), device=mask.device).unsqueeze(0)
        excluded = mask.masked_fill(positions < (pad + features[PROMPT_LENGTH]).unsqueeze(1), 0)
        pooling._exclude_prompt_from_mask = lambda *_: excluded  # answers the module's prompt branch
        try:
            vectors = pooling._forward_padded(features["token_embeddings"], mask, features, prompt_length=1)
        finally:
            del pooling._exclude_prompt_from_mask
        features["sentence_embedding"] = torch.cat(vectors, dim=-1)
        return features

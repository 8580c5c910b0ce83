"""Wrap one route of a loaded chain as a tensor-in, tensor-out torch module for export.

The wrapper runs the chain's *own* sentence-transformers modules, so the exported graph is the
reference computation itself (Pooling, Dense, LayerNorm, Normalize included), not a re-implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from packager.runtime.manifest import OutputMeaning, OutputSpec

GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Two texts of different lengths, so the exporter sees batch > 1 and padding, and keeps both axes dynamic.
_SAMPLE_TEXTS = ("A short text.", "A somewhat longer sample text, so that this batch needs padding.")


class ChainGraph(torch.nn.Module):
    """``forward(*tensors) -> tuple of outputs`` over the chain's modules.

    sentence-transformers' feature dicts carry non-tensor keys (``modality``); they are set here as
    constants and never become graph inputs.
    """

    def __init__(self, chain: torch.nn.Module, input_names: tuple[str, ...], output_keys: tuple[str, ...]) -> None:
        super().__init__()
        self.chain = chain
        self.input_names = input_names
        self.output_keys = output_keys

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features: dict[str, Any] = dict(zip(self.input_names, tensors))
        features["modality"] = "text"
        for module in self.chain:
            features = module(features)
        return tuple(features[key] for key in self.output_keys)


@dataclass(frozen=True)
class RouteGraph:
    name: str
    module: ChainGraph
    input_names: tuple[str, ...]
    outputs: tuple[OutputSpec, ...]
    sample_inputs: tuple[torch.Tensor, ...]

    @property
    def parameter_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.module.parameters())


def graph_inputs(reference: Any, features: dict[str, Any]) -> tuple[str, ...]:
    """The tensors the reference actually feeds its transformer: what the tokenizer produces,
    minus what the model's forward does not take (e.g. token_type_ids for RoBERTa-likes)."""
    accepted = getattr(reference[0], "model_forward_params", None)
    return tuple(k for k in GRAPH_INPUTS if k in features and (accepted is None or k in accepted))


def compile_route(reference: Any, *, include_token_embeddings: bool = False) -> RouteGraph:
    """The single route of a chain without a Router."""
    features = reference.preprocess(list(_SAMPLE_TEXTS))
    input_names = graph_inputs(reference, features)
    keys = ("sentence_embedding", "token_embeddings") if include_token_embeddings else ("sentence_embedding",)
    module = ChainGraph(reference, input_names, keys).eval()
    sample = tuple(features[name] for name in input_names)
    with torch.no_grad():
        values = module(*sample)
    outputs = [OutputSpec(name="sentence_embedding", meaning=OutputMeaning.SENTENCE_EMBEDDING,
                          shape=("batch", int(values[0].shape[-1])))]
    if include_token_embeddings:
        outputs.append(OutputSpec(name="token_embeddings", meaning=OutputMeaning.TOKEN_EMBEDDINGS,
                                  shape=("batch", "sequence", int(values[1].shape[-1]))))
    return RouteGraph(name="default", module=module, input_names=input_names, outputs=tuple(outputs),
                      sample_inputs=sample)

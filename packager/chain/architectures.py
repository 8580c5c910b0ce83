"""The backbone architectures the architecture matrix proves (``tests/test_architectures.py``):
each is built from a tiny random model of its shape, in the chain kinds real models use it for,
to ONNX and OpenVINO fp32, and passes the default parity gate through the torch-free loader.
The matrix checks every claim made here against what it builds, so this table is what the docs'
supported-architectures page shows and what ``packager inspect`` says about a chain's backbone."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from packager.chain.spec import ChainSpec
from packager.runtime.enums import ChainKind, ModuleKind

ST, CE, SPARSE, MULTI = (ChainKind.SENTENCE_TRANSFORMER, ChainKind.CROSS_ENCODER, ChainKind.SPARSE_ENCODER,
                         ChainKind.MULTI_VECTOR_ENCODER)
REMOTE_CODE = "remote code"  # the row of the one hand-written encoder the matrix builds with --trust-remote-code


@dataclass(frozen=True)
class Proven:
    """What the matrix builds and measures for one architecture (a config's ``model_type``)."""

    models: str  # popular models of this shape, for the docs
    chain_kinds: tuple[ChainKind, ...]  # the chain kinds built on it, each in ONNX and OpenVINO fp32
    fused_attention: str | None  # onnxruntime's fused attention operator in its ONNX graph, if any
    int8: bool  # its first chain kind's int8 ONNX variant passes the default gate (tiny random weights)


PROVEN: dict[str, Proven] = {
    "bert": Proven("all-MiniLM, bge, e5, ms-marco MiniLM cross-encoders, SPLADE, ColBERT", (ST, CE, SPARSE, MULTI),
                   "Attention", True),
    "roberta": Proven("all-distilroberta-v1, stsb-roberta", (ST,), "Attention", True),
    "modernbert": Proven("gte-modernbert, modernbert-embed, gte-reranker-modernbert", (ST, CE),
                         "MultiHeadAttention", True),
    "qwen3": Proven("Qwen3-Embedding, Qwen3-Reranker", (ST, CE), "MultiHeadAttention", True),
    "t5": Proven("sentence-t5, GTR", (ST,), "MultiHeadAttention", False),
    "clip": Proven("clip-ViT-B-32 and other CLIP image search", (ST,), "Attention", True),
    "siglip": Proven("SigLIP image search (saved with fixed-width text padding)", (ST,), "Attention", True),
    "gemma3_text": Proven("EmbeddingGemma (bidirectional attention)", (ST,), "MultiHeadAttention", True),
    "qwen2": Proven("gte-Qwen2, Qwen2 sequence-classification rerankers", (ST, CE), "MultiHeadAttention",
                    True),
    "llama": Proven("LLM2Vec-style Llama embedders", (ST,), "MultiHeadAttention", True),
    "mistral": Proven("e5-mistral, SFR-Embedding-Mistral", (ST,), "MultiHeadAttention", True),
    REMOTE_CODE: Proven("a hand-written encoder built with --trust-remote-code (the nomic-embed-text, "
                        "jina-embeddings-v2, gte-v1.5 shape)", (ST,), "MultiHeadAttention", True),
    "distilbert": Proven("msmarco and multi-qa DistilBERT embedders and cross-encoders, SPLADE v3, OpenSearch "
                         "neural-sparse", (ST, CE, SPARSE), "Attention", True),
    "xlm-roberta": Proven("bge-m3, multilingual-e5, bge-reranker-v2-m3, multilingual SPLADE", (ST, CE, SPARSE),
                          "Attention", True),
    "deberta-v2": Proven("mxbai-rerank v1, DeBERTa-v3 embedders", (ST, CE), None, True),
    "electra": Proven("ms-marco ELECTRA cross-encoders", (CE, ST), "Attention", True),
    "albert": Proven("paraphrase-albert", (ST,), "Attention", True),
    "mpnet": Proven("all-mpnet-base-v2, multi-qa-mpnet", (ST,), "Attention", True),
}


@dataclass(frozen=True)
class Backbone:
    module: str  # the chain module that holds it
    model_type: str | None
    remote_code: bool  # its config maps to code in the folder (auto_map)

    @property
    def verdict(self) -> str:
        if self.remote_code:
            return (f"untested: {self.model_type or 'its model'} runs code from the folder; the matrix proves one "
                    "hand-written encoder, not this one")
        if self.model_type is None:
            return "untested: its config.json names no model_type"
        proven = PROVEN.get(self.model_type)
        if proven is None:
            return f"untested: {self.model_type} is not in the architecture matrix"
        return "proven by the architecture matrix for " + ", ".join(k.value for k in proven.chain_kinds)


def backbones(chain: ChainSpec) -> list[Backbone]:
    """The transformer backbone of each Transformer module, from its ``config.json``."""
    found = []
    for module in chain.all_modules():
        if module.kind not in (ModuleKind.TRANSFORMER, ModuleKind.MLM_TRANSFORMER):
            continue
        config = _config(chain, module.path)
        model_type = config.get("model_type")
        found.append(Backbone(module.name, model_type if isinstance(model_type, str) else None,
                              remote_code="auto_map" in config))
    return found


def _config(chain: ChainSpec, path: str) -> dict[str, Any]:
    """A module's transformers config, or nothing where it has none that parses."""
    try:
        config = json.loads((chain.source.folder / path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}

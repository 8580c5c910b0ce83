"""Export steps for the three modules that branch on Python values the exporter would freeze to
the sample's shapes. Each calls the module's own code where it can, or repeats its arithmetic
without the branch; the parity gate proves each equal to the module."""

from __future__ import annotations

from typing import Any

import torch

from packager.chain.spec import ModuleSpec
from packager.errors import UnsupportedModuleError
from packager.runtime.manifest import PROMPT_LENGTH, ModuleKind


def export_step(spec: ModuleSpec, module: torch.nn.Module) -> torch.nn.Module:
    if spec.kind is ModuleKind.SPLADE_POOLING:
        return SpladePooling(module)
    if spec.kind is ModuleKind.SPARSE_AUTO_ENCODER:
        return SparseAutoEncoder(module)
    if spec.kind is ModuleKind.POOLING and not module.include_prompt:
        if not (hasattr(module, "_forward_padded") and hasattr(module, "_exclude_prompt_from_mask")):
            raise UnsupportedModuleError(f"module {spec.name!r}: this sentence-transformers version's Pooling lacks "
                                         "the methods include_prompt=False is exported through")
        return PromptExcludingPooling(module)
    return module


class SpladePooling(torch.nn.Module):
    """SpladePooling without its Python loop over sequence chunks (a loop over the length freezes
    the sequence axis at export): log1p(relu(logits * mask)), once more log1p for log1p_relu,
    then max or sum over the tokens: the module's arithmetic in one chunk."""

    def __init__(self, pooling: Any) -> None:  # sentence-transformers' SpladePooling
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


class SparseAutoEncoder(torch.nn.Module):
    """SparseAutoEncoder's inference path through its own methods: the module picks that path by
    torch.is_inference_mode_enabled(), which tracing for export does not set."""

    def __init__(self, encoder: Any) -> None:  # sentence-transformers' SparseAutoEncoder
        super().__init__()
        self.encoder = encoder

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        encoder: Any = self.encoder
        prepared, _ = encoder.prepare(features["sentence_embedding"])
        latents, _ = encoder.top_k(encoder.encode_pre_act(prepared), encoder.k, compute_aux=False)
        features["sentence_embedding"] = latents
        return features


class PromptExcludingPooling(torch.nn.Module):
    """Pooling with include_prompt=False. sentence-transformers reads the prompt length as a Python
    int and branches on it; here it is the graph input ``prompt_length`` ([batch], 0 for no
    prompt). The excluded mask follows the module's own left-padding-aware rule in tensor ops,
    and the module's own pooling code, handed that mask, does the rest."""

    def __init__(self, pooling: Any) -> None:  # sentence-transformers' Pooling
        super().__init__()
        self.pooling = pooling

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        pooling: Any = self.pooling
        mask = features["attention_mask"]
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

"""Export steps for the modules the exporter cannot take as they are: three that branch on Python
values the exporter would freeze to the sample's shapes, BoW (whose vector is made in Python in
preprocess), LSTM (over a packed sequence), StaticEmbedding (an EmbeddingBag over
flat ids and offsets, where the graph takes padded ids and a mask), a causal LM's head where
LogitScore reads two of its rows, and MultiVectorMask, which branches on the task and uses
``torch.isin``. Each calls the module's own code where it can, or repeats its
arithmetic without the branch; the parity gate proves each equal to the module."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from packager.chain.spec import ModuleSpec
from packager.chain.st_internals import can_exclude_prompt, pool_excluding, skiplist_ids
from packager.errors import UnsupportedModuleError
from packager.runtime.enums import ModuleKind
from packager.runtime.routes import PROMPT_LENGTH
from packager.runtime.text import EXPANSION_POSITIONS

# The graph outputs of a multi-vector route: the tokens each task keeps. sentence-transformers'
# verbs pass the task "query" (encode_query), "document" (encode_document) or none (encode), and
# MultiVectorMask treats none as "document".
SCORING_MASKS = {"query": "scoring_mask_query", "document": "scoring_mask_document"}


def export_steps(specs: tuple[ModuleSpec, ...], modules: list[torch.nn.Module], *,
                 slice_head: bool = True, prompt_length: bool | None = None) -> list[torch.nn.Module]:
    """One step per module, except that a causal LM followed by the LogitScore that reads its
    logits becomes one step computing only the rows LogitScore reads (``slice_head``). Pooling
    excludes the prompt where the route gives its length (``prompt_length``; by default where
    the route starts with a Transformer)."""
    steps: list[torch.nn.Module] = []
    index = 0
    while index < len(modules):
        if slice_head and index + 1 < len(modules) and reads_causal_logits(specs[index], modules[index],
                                                                          specs[index + 1], modules[index + 1]):
            steps.append(SlicedLogitScore(modules[index], modules[index + 1]))
            index += 2
            continue
        if specs[index].kind is ModuleKind.CNN:
            check_zero_padding(specs, modules, index)
        # Only a Transformer gives Pooling the prompt's length; after any other input module
        # (WordEmbeddings...) include_prompt=False changes nothing, in sentence-transformers too.
        steps.append(export_step(specs[index], modules[index], prompt_length=specs[0].transformer_task is not None
                                 if prompt_length is None else prompt_length))
        index += 1
    return steps


def check_zero_padding(specs: tuple[ModuleSpec, ...], modules: list[Any], index: int) -> None:
    """A CNN's convolutions read the padding positions beside a text's last tokens, so a text's
    vector is the same in every batch (and the artifact's the reference's) only if what it reads
    there is zeros, as its own zero padding at the edges is: after WordWeights (which multiplies
    padding by zero) or a WordEmbeddings whose padding row (id 0, GloVe's PADDING_TOKEN) is zeros."""
    before, module = specs[index - 1], modules[index - 1]
    if before.kind is ModuleKind.WORD_WEIGHTS or (
            before.kind is ModuleKind.WORD_EMBEDDINGS and not module.emb_layer.weight[0].any()):
        return
    raise UnsupportedModuleError(
        f"module {specs[index].name!r}: a CNN convolves across the padding after a text's last token, and its input "
        f"there (from {before.kind.value} {before.name!r}) is not zeros, so a text's vector would depend on how long "
        "the other texts of its batch are; a CNN compiles after WordWeights or after a WordEmbeddings whose padding "
        "row (id 0) is zeros")


def reads_causal_logits(spec: ModuleSpec, module: Any, next_spec: ModuleSpec, next_module: Any) -> bool:
    return (spec.transformer_task == "text-generation" and next_spec.kind is ModuleKind.LOGIT_SCORE
            and next_module.module_input_name == getattr(module, "module_output_name", None)
            and getattr(module.model, "get_output_embeddings", lambda: None)() is not None)


def export_step(spec: ModuleSpec, module: torch.nn.Module, *, prompt_length: bool = True) -> torch.nn.Module:
    if spec.kind is ModuleKind.STATIC_EMBEDDING:
        return StaticEmbeddingMean(module)
    if spec.kind is ModuleKind.SPLADE_POOLING:
        return SpladePooling(module)
    if spec.kind is ModuleKind.BOW:
        return BagOfWords(module)
    if spec.kind is ModuleKind.LSTM:
        return UnpackedLSTM(module)
    if spec.kind is ModuleKind.SPARSE_AUTO_ENCODER:
        return SparseAutoEncoder(module)
    if spec.kind is ModuleKind.MULTI_VECTOR_MASK:
        return ScoringMasks(module)
    if spec.kind is ModuleKind.POOLING and not module.include_prompt and prompt_length:
        if not can_exclude_prompt(module):
            raise UnsupportedModuleError(f"module {spec.name!r}: this sentence-transformers version's Pooling lacks "
                                         "the methods include_prompt=False is exported through")
        return PromptExcludingPooling(module)
    return module


class ScoringMasks(torch.nn.Module):
    """MultiVectorMask for every task at once, each task's mask a graph output named in
    SCORING_MASKS: the module's arithmetic with ``torch.isin`` (which the exporter cannot lower)
    as a comparison against each listed id. Real tokens count; a query's expansion positions count
    too; the skiplist drops tokens for the tasks it applies to (no task counting as "document");
    the allow-list keeps only its ids for every task but "query". Without a MultiVectorMask
    (``mask`` None) every task keeps the attention mask's tokens, as sentence-transformers does."""

    def __init__(self, mask: Any | None) -> None:  # sentence-transformers' MultiVectorMask
        super().__init__()
        skip = skiplist_ids(mask)
        keep = getattr(mask, "keep_only_token_ids", None)
        self.skiplist_tasks = set(mask.skiplist_tasks) if mask is not None else set()
        self.register_buffer("skip", skip.clone() if skip is not None and len(skip) else None, persistent=False)
        self.register_buffer("keep", torch.tensor(keep, dtype=torch.long) if keep else None, persistent=False)

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        ids = features["input_ids"]
        real = features["attention_mask"].bool()
        for task, name in SCORING_MASKS.items():
            kept = real
            positions = features.get(EXPANSION_POSITIONS)
            if task == "query" and positions is not None:
                kept = kept | positions.bool()
            if task in self.skiplist_tasks and self.skip is not None:
                kept = kept & ~(ids.unsqueeze(-1) == self.skip).any(dim=-1)
            if task != "query" and self.keep is not None:
                kept = kept & (ids.unsqueeze(-1) == self.keep).any(dim=-1)
            features[name] = kept
        return features


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
        vectors = pool_excluding(pooling, features["token_embeddings"], mask, features, excluded)
        features["sentence_embedding"] = torch.cat(vectors, dim=-1)
        return features


class StaticEmbeddingMean(torch.nn.Module):
    """StaticEmbedding's EmbeddingBag mean over padded ids: the mean of the table's rows of a
    text's tokens (a text without tokens embeds to zeros, as an empty bag does)."""

    def __init__(self, embedding: Any) -> None:  # sentence-transformers' StaticEmbedding
        super().__init__()
        self.table = embedding.embedding.weight

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        mask = features["attention_mask"].unsqueeze(-1).to(self.table.dtype)
        summed = (torch.nn.functional.embedding(features["input_ids"], self.table) * mask).sum(dim=1)
        features["sentence_embedding"] = summed / mask.sum(dim=1).clamp(min=1)
        return features


class BagOfWords(torch.nn.Module):
    """BoW's vector, which the module makes in Python in preprocess (a loop over each text's ids),
    from the padded ids: a word's weight times its count in the text (cumulative_term_frequency),
    or once if it occurs at all. Padding counts for nothing."""

    def __init__(self, bow: Any) -> None:  # sentence-transformers' BoW
        super().__init__()
        self.register_buffer("weights", torch.tensor(bow.weights, dtype=torch.float32), persistent=False)
        self.cumulative = bool(bow.cumulative_term_frequency)

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        ids = features["input_ids"]
        counts = ids.new_zeros((ids.shape[0], self.weights.shape[0]), dtype=torch.float32)
        counts = counts.scatter_add(1, ids, features["attention_mask"].to(torch.float32))
        if not self.cumulative:
            counts = (counts > 0).to(torch.float32)
        features["sentence_embedding"] = counts * self.weights
        return features


class UnpackedLSTM(torch.nn.Module):
    """The LSTM module without pack_padded_sequence, which torch.export cannot trace (torch.nn.LSTM
    sizes its initial state by the packed batch sizes, a value of the data). A text's length is
    its mask's sum, at least 1, as the module clamps it. Going forward, a position reads only the
    ones before it, so padding after the text changes nothing; going backward, each text's own
    positions are reversed before the LSTM and back after it, so padding comes after them there
    too. Positions past a text's length are zeros, as pad_packed_sequence leaves them."""

    def __init__(self, module: Any) -> None:  # sentence-transformers' LSTM
        super().__init__()
        encoder = module.encoder
        self.directions = 2 if encoder.bidirectional else 1
        self.cells = torch.nn.ModuleList()
        names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if encoder.bias else ())
        for layer in range(encoder.num_layers):
            for suffix in ("", "_reverse")[: self.directions]:  # each direction of each layer on its own
                cell = torch.nn.LSTM(encoder.input_size if layer == 0 else encoder.hidden_size * self.directions,
                                     encoder.hidden_size, batch_first=True, bias=encoder.bias)
                cell.load_state_dict({f"{name}_l0": getattr(encoder, f"{name}_l{layer}{suffix}") for name in names})
                self.cells.append(cell)

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        hidden = features["token_embeddings"]
        lengths = features["attention_mask"].sum(dim=1).clamp(min=1).unsqueeze(1)
        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        inside = positions < lengths
        reverse = torch.where(inside, lengths - 1 - positions, positions).unsqueeze(-1)
        for layer in range(0, len(self.cells), self.directions):
            outputs = [self.cells[layer](hidden)[0]]
            if self.directions == 2:
                # expand(-1, -1, width), not expand_as: the exporter gives an LSTM's output a fixed
                # sequence length, which expand_as would copy into the graph
                backward = self.cells[layer + 1](hidden.gather(1, reverse.expand(-1, -1, hidden.shape[-1])))[0]
                outputs.append(backward.gather(1, reverse.expand(-1, -1, backward.shape[-1])))
            hidden = torch.cat(outputs, dim=-1)
        features["token_embeddings"] = hidden * inside.unsqueeze(-1).to(hidden.dtype)
        return features


class SlicedLogitScore(torch.nn.Module):
    """A causal LM and the LogitScore that reads its logits, computing the language-model head
    only where LogitScore reads it: the true (and false) token rows at the last position, which
    left padding makes the last real token. For a vocabulary of 151k that head is most of the
    graph's weights and, over every position, most of its memory. The transformer's decoder is
    the module's own; any per-logit transform of the head (final soft-capping) is applied to the
    sliced rows."""

    def __init__(self, transformer: Any, score: Any) -> None:  # sentence-transformers' Transformer, LogitScore
        super().__init__()
        self.accepted = transformer.model_forward_params  # None: the model takes **kwargs
        self.decoder = transformer.model.get_decoder()
        takes_cache = "use_cache" in inspect.signature(self.decoder.forward).parameters
        self.no_cache = {"use_cache": False} if takes_cache else {}
        head = transformer.model.get_output_embeddings()
        rows = [score.true_token_id] + ([score.false_token_id] if score.false_token_id is not None else [])
        self.rows = torch.nn.Parameter(head.weight[rows].detach().clone(), requires_grad=False)
        bias = getattr(head, "bias", None)
        self.bias = None if bias is None else torch.nn.Parameter(bias[rows].detach().clone(), requires_grad=False)
        self.softcap = getattr(transformer.model.config, "final_logit_softcapping", None)

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        inputs = {k: v for k, v in features.items() if isinstance(v, torch.Tensor)
                  and (self.accepted is None or k in self.accepted)}
        hidden = self.decoder(**inputs, **self.no_cache).last_hidden_state[:, -1]
        logits = torch.nn.functional.linear(hidden, self.rows, self.bias)
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        scores = logits[:, 0] if logits.shape[1] == 1 else logits[:, 0] - logits[:, 1]
        features["scores"] = scores.unsqueeze(1)
        return features

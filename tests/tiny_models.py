"""Tiny sentence-transformers chains built locally for tests: random few-layer BERT, RoBERTa, T5 and
Qwen3 models with tokenizers trained here on real text, saved by sentence-transformers itself.
No network, no hub. Weights are drawn large enough that outputs depend strongly on the input."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from packager.validators.texts import real_sentences

WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BPE_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, initializer_range=0.3)


# The tokenizers library's trainers break ties between equally frequent pairs in hash-map order,
# which changes from process to process: a tiny model trained with them is another model in every
# test session (and a borderline test flips). These vocabularies are made deterministically.


def train_wordpiece(vocab_size: int = 600) -> Tokenizer:
    """WordPiece over real sentences: the special tokens, every character alone and as a
    continuation (so any word can be spelt), then the most frequent words (ties alphabetical)."""
    tokenizer = Tokenizer(models.WordPiece(vocab=_wordpiece_vocab(vocab_size), unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tokenizer


@lru_cache
def _wordpiece_vocab(vocab_size: int) -> dict[str, int]:
    normalizer, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = Counter(word for sentence in real_sentences()[:600]
                    for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(sentence)))
    characters = sorted({c for word in words for c in word})
    tokens = [*WORDPIECE_SPECIALS, *characters, *(f"##{c}" for c in characters)]
    known = set(tokens)
    tokens += [w for w, _ in sorted(words.items(), key=lambda item: (-item[1], item[0])) if w not in known]
    return {token: i for i, token in enumerate(tokens[:vocab_size])}


def train_byte_level_bpe(vocab_size: int = 700, *, post_processor: str = "roberta") -> Tokenizer:
    """Byte-level BPE; "roberta" wraps texts in <s> ... </s>, "eos" only appends </s> (Qwen-like)."""
    vocab, merges = _bpe(vocab_size)
    tokenizer = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges), unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    if post_processor == "roberta":
        tokenizer.post_processor = processors.RobertaProcessing(("</s>", eos), ("<s>", bos))
    else:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", eos)])
    return tokenizer


@lru_cache
def _bpe(vocab_size: int) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    """BPE merges learnt over real sentences, the most frequent pair first (ties: the pair that
    sorts first), on the byte-level alphabet."""
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    words = Counter(word for sentence in real_sentences()[:600] for word, _ in pre.pre_tokenize_str(sentence))
    spelt = {tuple(word): count for word, count in words.items()}
    tokens = [*BPE_SPECIALS, *sorted(pre_tokenizers.ByteLevel.alphabet())]
    merges: list[tuple[str, str]] = []
    while len(tokens) < vocab_size:
        pairs: Counter = Counter()
        for symbols, count in spelt.items():
            for pair in itertools.pairwise(symbols):  # each symbol with the next
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        tokens.append(best[0] + best[1])
        spelt = {_merge(symbols, best): count for symbols, count in spelt.items()}
    return tuple((token, i) for i, token in enumerate(tokens)), tuple(merges)


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(pair[0] + pair[1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return tuple(merged)


def _wordpiece_tokenizer():
    from transformers import BertTokenizerFast

    return BertTokenizerFast(tokenizer_object=train_wordpiece(), unk_token="[UNK]", pad_token="[PAD]",
                             cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def save_tiny_bert(path: Path, *, seed: int = 0, head: str = "none", num_labels: int = 1,
                   initializer_range: float = SMALL["initializer_range"]) -> Path:
    """A 2-layer BERT: ``head`` is "none" (BertModel), "mlm" or "classifier"."""
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel

    tokenizer = _wordpiece_tokenizer()
    config = BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=64, num_labels=num_labels,
                        **{**SMALL, "initializer_range": initializer_range})
    model_class = {"none": BertModel, "mlm": BertForMaskedLM, "classifier": BertForSequenceClassification}[head]
    torch.manual_seed(seed)
    model_class(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_roberta(path: Path, *, seed: int = 0) -> Path:
    """A 2-layer RoBERTa with a byte-level BPE tokenizer: no token_type_ids."""
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    tokenizer = RobertaTokenizerFast(tokenizer_object=train_byte_level_bpe(), bos_token="<s>", eos_token="</s>",
                                     sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                     mask_token="<mask>")
    config = RobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=66, pad_token_id=tokenizer.pad_token_id,
                           type_vocab_size=1, **SMALL)
    torch.manual_seed(seed)
    RobertaModel(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_modernbert(path: Path, *, seed: int = 0) -> Path:
    """A 3-layer ModernBERT: rotary positions, sliding-window attention in two layers of three,
    no token_type_ids."""
    from transformers import ModernBertConfig, ModernBertModel

    tokenizer = _wordpiece_tokenizer()
    config = ModernBertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=128,
                              local_attention=16, global_attn_every_n_layers=3, pad_token_id=tokenizer.pad_token_id,
                              cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
                              bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                              initializer_range=SMALL["initializer_range"])
    torch.manual_seed(seed)
    ModernBertModel(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_qwen(path: Path, *, seed: int = 0, causal_lm: bool = False, padding_side: str = "left") -> Path:
    """A 2-layer Qwen3 (decoder) with a byte-level BPE tokenizer that appends </s>."""
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_byte_level_bpe(post_processor="eos"), eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>", padding_side=padding_side)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True, initializer_range=0.3)
    torch.manual_seed(seed)
    (Qwen3ForCausalLM if causal_lm else Qwen3Model)(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


T5_SPECIALS = ["<pad>", "</s>", "<unk>"]


def train_unigram(vocab_size: int = 600) -> Tokenizer:
    """A sentencepiece-style Unigram (T5's tokenizer kind) over real sentences: the special tokens,
    every character alone and after the word-start mark, then the most frequent words (ties
    alphabetical), each scored by its log frequency; texts end in </s>."""
    tokenizer = Tokenizer(models.Unigram(list(_unigram_vocab(vocab_size)), unk_id=T5_SPECIALS.index("<unk>")))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    eos = tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", eos)])
    return tokenizer


@lru_cache
def _unigram_vocab(vocab_size: int) -> tuple[tuple[str, float], ...]:
    pre = pre_tokenizers.Metaspace()
    words = Counter(word for sentence in real_sentences()[:600] for word, _ in pre.pre_tokenize_str(sentence))
    characters = sorted({c for word in words for c in word} | {"\u2581"})
    pieces = [*characters, *(f"\u2581{c}" for c in characters if c != "\u2581")]
    known = set(pieces)
    frequent = [w for w, _ in sorted(words.items(), key=lambda item: (-item[1], item[0])) if w not in known]
    total = sum(words.values())
    scored = [(piece, -12.0) for piece in pieces]
    scored += [(w, math.log(words[w] / total)) for w in frequent]
    return tuple([(s, 0.0) for s in T5_SPECIALS] + scored[:vocab_size - len(T5_SPECIALS)])


def save_tiny_t5(path: Path, *, seed: int = 0) -> Path:
    """A 2-layer T5 encoder (T5EncoderModel, as sentence-t5 and GTR use): 4 heads of 8, relative
    position buckets, a Unigram tokenizer that appends </s>."""
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_unigram(), eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>")
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
                      feed_forward_proj="relu", is_encoder_decoder=False, use_cache=False,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      initializer_factor=4.0)
    torch.manual_seed(seed)
    T5EncoderModel(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# Chat templates of the tiny chat models (written here, in the shapes real ones have).
CHAT_SPECIALS = ["<|im_start|>", "<|im_end|>"]
# A causal-LM reranker's (flat messages): the system message is the instruction, the query and
# document messages fill their slots, and the assistant turn is the tail LogitScore reads.
RERANK_TEMPLATE = """{%- set instruction = messages | selectattr("role", "eq", "system") | map(attribute="content")
    | first -%}
<|im_start|>system
Judge whether the document answers the query; reply with one word.<|im_end|>
<|im_start|>user
{% if instruction %}<Instruct>: {{ instruction }}
{% endif %}<Query>: {{ messages | selectattr("role", "eq", "query") | map(attribute="content") | first }}
<Document>: {{ messages | selectattr("role", "eq", "document") | map(attribute="content") | first }}<|im_end|>
<|im_start|>assistant
"""
# A sequence-classification reranker's (structured messages), declaring ``task``.
CLASSIFIER_TEMPLATE = """{%- for message in messages -%}
<|im_start|>{{ message.role }}
{{ message.content[0].text | trim }}<|im_end|>
{% endfor -%}
{%- if task %}<|im_start|>task {{ task }}<|im_end|>
{% endif -%}
<|im_start|>verdict"""
# An embedder's (flat messages), declaring ``task``: queries get a search turn.
EMBEDDER_TEMPLATE = """{%- for message in messages %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endfor -%}
{%- if task == "query" %}<|im_start|>search
{% endif -%}
{%- if add_generation_prompt %}<|im_start|>embed{% endif %}"""


def save_tiny_chat_qwen(path: Path, *, template: str, head: str = "none", seed: int = 0) -> Path:
    """A 2-layer Qwen3 whose tokenizer has chat tokens and ``template``; ``head`` is "none"
    (Qwen3Model), "causal" or "classifier" (one label)."""
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen3Config,
        Qwen3ForCausalLM,
        Qwen3ForSequenceClassification,
        Qwen3Model,
    )

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_byte_level_bpe(post_processor="eos"), eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>", padding_side="left")
    tokenizer.add_tokens(CHAT_SPECIALS, special_tokens=True)
    tokenizer.chat_template = template
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True, initializer_range=0.3, num_labels=1)
    torch.manual_seed(seed)
    model_class = {"none": Qwen3Model, "causal": Qwen3ForCausalLM, "classifier": Qwen3ForSequenceClassification}[head]
    model_class(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _messages(method_output_name: str, message_format: str, *, text: bool) -> dict:
    """A modality_config that takes chat messages (and, with ``text``, says texts come too)."""
    config = {"message": {"method": "forward", "method_output_name": method_output_name, "format": message_format}}
    return {"text": {"method": "forward", "method_output_name": method_output_name}, **config} if text else config


# --- SentenceTransformer chains --------------------------------------------------------------


def save_chain(path: Path, backbone: Path, *, pooling: str | tuple[str, ...] = "mean", dense: int = 0,
               dense_bias: bool = True, dropout: bool = False, layer_norm: bool = False, normalize: bool = False,
               max_seq_length: int = 48, prompts: dict[str, str] | None = None,
               default_prompt_name: str | None = None, include_prompt: bool = True) -> Path:
    """Transformer + Pooling (+ ``dense`` Dense layers, Dropout, LayerNorm, Normalize), saved as a
    SentenceTransformer."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules

    chain = [modules.Transformer(str(backbone), max_seq_length=max_seq_length)]
    dim = chain[0].get_embedding_dimension()
    chain.append(modules.Pooling(dim, pooling_mode=pooling, include_prompt=include_prompt))
    dim = chain[-1].get_embedding_dimension()
    torch.manual_seed(1)
    for i in range(dense):
        activation = torch.nn.Tanh() if i == dense - 1 else torch.nn.Identity()
        chain.append(modules.Dense(dim, 24, bias=dense_bias, activation_function=activation))
        dim = 24
    if dropout:
        chain.append(modules.Dropout(0.2))
    if layer_norm:
        chain.append(modules.LayerNorm(dim))
    if normalize:
        chain.append(modules.Normalize())
    SentenceTransformer(modules=chain, device="cpu", prompts=prompts,
                        default_prompt_name=default_prompt_name).save(str(path))
    return path


def save_dense_router(path: Path, bert: Path, other_bert: Path) -> Path:
    """Two dense routes (query: mean pooling of one BERT, document: CLS of another) + Normalize."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules

    query = [modules.Transformer(str(bert), max_seq_length=32), modules.Pooling(32, pooling_mode="mean")]
    document = [modules.Transformer(str(other_bert), max_seq_length=48), modules.Pooling(32, pooling_mode="cls")]
    router = modules.Router.for_query_document(query_modules=query, document_modules=document)
    SentenceTransformer(modules=[router, modules.Normalize()], device="cpu").save(str(path))
    return path


def save_shared_router(path: Path, chat_qwen: Path) -> Path:
    """One chat-template Transformer (per-task lengths, a template that declares ``task``)
    followed by a Router of per-task heads, then Normalize: the Router is not the first module."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules

    transformer = modules.Transformer(str(chat_qwen), max_seq_length=96, query_length=64, document_length=48,
                                      modality_config=_messages("last_hidden_state", "flat", text=True),
                                      module_output_name="token_embeddings",
                                      processing_kwargs={"chat_template": {"add_generation_prompt": True}})
    torch.manual_seed(6)
    query = [modules.Pooling(32, pooling_mode="lasttoken"), modules.Dense(32, 24)]
    document = [modules.Pooling(32, pooling_mode="mean"), modules.Dense(32, 24)]
    router = modules.Router.for_query_document(query_modules=query, document_modules=document)
    SentenceTransformer(modules=[transformer, router, modules.Normalize()], device="cpu",
                        prompts={"query": "Find passages that answer this."}).save(str(path))
    return path


def save_query_expansion(path: Path, bert: Path) -> Path:
    """Query expansion to a fixed 20 tokens (attended, so mean pooling sees the mask tokens), a
    document length, and text settings that only change how wide batches are."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules

    transformer = modules.Transformer(str(bert), max_seq_length=48, document_length=32,
                                      query_expansion={"strategy": "fixed", "length": 20, "attend": True},
                                      processing_kwargs={"text": {"pad_to_multiple_of": 4}})
    SentenceTransformer(modules=[transformer, modules.Pooling(32, pooling_mode="mean")], device="cpu").save(str(path))
    return path


def save_static(path: Path, tokenizer_source: Path, *, dense: bool = False) -> Path:
    """StaticEmbedding (random table over a WordPiece tokenizer whose tokenizer.json truncates at
    24 tokens) + (Dense) + Normalize."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules

    tokenizer = Tokenizer.from_file(str(tokenizer_source / "tokenizer.json"))
    tokenizer.enable_truncation(24)
    generator = torch.Generator().manual_seed(7)
    table = torch.randn(tokenizer.get_vocab_size(), 32, generator=generator)
    chain = [modules.StaticEmbedding(tokenizer, embedding_weights=table)]
    if dense:
        torch.manual_seed(8)
        chain.append(modules.Dense(32, 24))
    SentenceTransformer(modules=[*chain, modules.Normalize()], device="cpu").save(str(path))
    return path


# --- CrossEncoder chains ---------------------------------------------------------------------


def save_sequence_classifier(path: Path, classifier: Path, *, activation: torch.nn.Module | None = None) -> Path:
    from sentence_transformers import CrossEncoder

    CrossEncoder(str(classifier), device="cpu", max_length=48, activation_fn=activation).save(str(path))
    return path


def save_logit_score(path: Path, causal_lm: Path, *, false_token: bool = True) -> Path:
    """Causal LM + LogitScore: the log-odds of two vocabulary tokens at the last position."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.modules import LogitScore, Transformer

    transformer = Transformer(str(causal_lm), transformer_task="text-generation", max_seq_length=64)
    ids = transformer.tokenizer.convert_tokens_to_ids(["the", "of"])
    score = LogitScore(true_token_id=ids[0], false_token_id=ids[1] if false_token else None)
    CrossEncoder(modules=[transformer, score], device="cpu").save(str(path))
    return path


def save_chat_reranker(path: Path, chat_lm: Path) -> Path:
    """A causal-LM reranker rendering (query, document) pairs through its chat template (flat),
    with a default instruction prompt (a system message), scored by LogitScore."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.modules import LogitScore, Transformer

    transformer = Transformer(str(chat_lm), transformer_task="text-generation", max_seq_length=200,
                              modality_config=_messages("logits", "flat", text=True),
                              module_output_name="causal_logits")
    ids = transformer.tokenizer.convert_tokens_to_ids(["the", "of"])
    CrossEncoder(modules=[transformer, LogitScore(true_token_id=ids[0], false_token_id=ids[1])], device="cpu",
                 prompts={"query": "Given a question, find passages that answer it"},
                 default_prompt_name="query").save(str(path))
    return path


def save_chat_classifier(path: Path, chat_classifier: Path) -> Path:
    """A sequence-classification reranker whose template (structured messages) declares ``task``,
    with a chat-template max_length below the model's."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.modules import Transformer

    transformer = Transformer(str(chat_classifier), transformer_task="sequence-classification", max_seq_length=160,
                              modality_config=_messages("logits", "structured", text=True), module_output_name="scores",
                              processing_kwargs={"chat_template": {"max_length": 120}})
    CrossEncoder(modules=[transformer], device="cpu").save(str(path))
    return path


def save_pooled_scorer(path: Path, backbone: Path, *, pooling: str = "lasttoken", include_prompt: bool = True,
                       prompts: dict[str, str] | None = None, default_prompt_name: str | None = None) -> Path:
    """Feature extraction + Pooling + a Dense scoring head."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    transformer = Transformer(str(backbone), max_seq_length=64)
    torch.manual_seed(2)
    head = Dense(32, 1, activation_function=None, module_output_name="scores")
    chain = [transformer, Pooling(32, pooling_mode=pooling, include_prompt=include_prompt), head]
    CrossEncoder(modules=chain, device="cpu", prompts=prompts, default_prompt_name=default_prompt_name).save(str(path))
    return path


# --- SparseEncoder chains --------------------------------------------------------------------


def save_splade(path: Path, mlm: Path, *, strategy: str = "max", activation: str = "relu",
                max_active_dims: int | None = None, legacy_type: bool = False) -> Path:
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer

    transformer = Transformer(str(mlm), transformer_task="fill-mask", max_seq_length=48)
    SparseEncoder(modules=[transformer, SpladePooling(strategy, activation_function=activation)], device="cpu",
                  max_active_dims=max_active_dims).save(str(path))
    if legacy_type:  # as sentence-transformers < 5.4 saved it
        modules = json.loads((path / "modules.json").read_text())
        modules[0]["type"] = "sentence_transformers.sparse_encoder.models.MLMTransformer"
        (path / "modules.json").write_text(json.dumps(modules, indent=2))
    return path


def _static_embedding(tokenizer_source: Path):
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source))
    generator = torch.Generator().manual_seed(3)
    return SparseStaticEmbedding(tokenizer=tokenizer, weight=torch.rand(tokenizer.vocab_size, generator=generator) * 3,
                                 frozen=True)


def save_sparse_static(path: Path, tokenizer_source: Path) -> Path:
    from sentence_transformers import SparseEncoder

    SparseEncoder(modules=[_static_embedding(tokenizer_source)], device="cpu").save(str(path))
    return path


def save_sparse_router(path: Path, mlm: Path) -> Path:
    """Query route: static token weights; document route: SPLADE (as in inference-free SPLADE)."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import Router, SpladePooling, Transformer

    document = [Transformer(str(mlm), transformer_task="fill-mask", max_seq_length=48), SpladePooling("max")]
    router = Router.for_query_document(query_modules=[_static_embedding(mlm)], document_modules=document)
    SparseEncoder(modules=[router], device="cpu", similarity_fn_name="dot").save(str(path))
    return path


def save_csr(path: Path, bert: Path) -> Path:
    """Dense backbone + Pooling + SparseAutoEncoder (top-k latents)."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sentence_transformer.modules import Pooling
    from sentence_transformers.sparse_encoder.modules import SparseAutoEncoder, Transformer

    torch.manual_seed(4)
    encoder = SparseAutoEncoder(32, hidden_dim=64, k=8)
    torch.nn.init.normal_(encoder.latent_bias, std=0.1)
    SparseEncoder(modules=[Transformer(str(bert), max_seq_length=48), Pooling(32), encoder],
                  device="cpu").save(str(path))
    return path


# --- custom modules --------------------------------------------------------------------------

UNTRACEABLE_MODULE = '''
import torch
from sentence_transformers.base.modules import Module


class Gate(Module):
    """A custom module that branches on a tensor value: torch.export cannot trace it."""

    def forward(self, features):
        embedding = features["sentence_embedding"]
        features["sentence_embedding"] = embedding * 2 if embedding.sum() > 0 else -embedding
        return features

    def save(self, output_path, *args, **kwargs):
        self.save_config(output_path)
'''

CUSTOM_MODULE = '''
import torch
from sentence_transformers.base.modules import Module


class ScaleShift(Module):
    """A custom module: scales and shifts the sentence embedding."""

    config_keys = ["scale"]

    def __init__(self, scale: float = 2.0):
        super().__init__()
        self.scale = scale

    def forward(self, features):
        features["sentence_embedding"] = features["sentence_embedding"] * self.scale + 0.5
        return features

    def save(self, output_path, *args, **kwargs):
        self.save_config(output_path)
'''


def save_custom(path: Path, bert: Path, *, traceable: bool = True) -> Path:
    """A mean-pooling chain with a custom module whose code lives in the model folder."""
    save_chain(path, bert)
    name, code, config = ("scale_shift", "ScaleShift", {"scale": 3.0}) if traceable else ("gate", "Gate", {})
    (path / f"2_{code}").mkdir()
    (path / f"2_{code}" / "config.json").write_text(json.dumps(config))
    (path / f"{name}.py").write_text(CUSTOM_MODULE if traceable else UNTRACEABLE_MODULE)
    modules = json.loads((path / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": f"2_{code}", "type": f"{name}.{code}"})
    (path / "modules.json").write_text(json.dumps(modules, indent=2))
    return path


# --- multi-vector (late interaction) encoders -------------------------------------------------

def save_multi_vector(path: Path, bert: Path, *, skiplist: bool = True, expansion: bool = False,
                      normalize: bool = False, similarity: str = "maxsim") -> Path:
    """A MultiVectorEncoder: the tiny BERT, a token-level Dense (ColBERT's projection, to 16), then
    optionally Normalize, and a MultiVectorMask (with ``skiplist``, punctuation dropped from
    documents). With ``expansion``: query and document prompts, queries [MASK]-padded to at least
    20 tokens (the expansion tokens scored but not attended) and cut at 28, documents cut at 40."""
    import string

    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    settings = dict(query_expansion={"strategy": "min", "length": 20, "attend": False}, query_length=28,
                    document_length=40) if expansion else {}
    torch.manual_seed(9)
    chain = [Transformer(str(bert), max_seq_length=48, **settings),
             Dense(32, 16, bias=False, activation_function=None, module_input_name="token_embeddings")]
    if normalize:
        chain.append(Normalize(module_input_name="token_embeddings"))
    chain.append(MultiVectorMask(skiplist_words=list(string.punctuation) if skiplist else None))
    prompts = {"query": "query: ", "document": "passage: "} if expansion else None
    MultiVectorEncoder(modules=chain, device="cpu", similarity_fn_name=similarity, prompts=prompts).save(str(path))
    return path


def save_clip(path: Path, *, legacy: bool = False, seed: int = 0) -> Path:
    """A CLIP-style SentenceTransformer: a random 2-layer CLIP (text and 32x32 vision towers,
    projected to 16) with a byte-level BPE tokenizer and a CLIP image processor made here. The v6
    form is one Transformer whose modalities are text and image; ``legacy`` saves the CLIPModel
    module as sentence-transformers before v5.4 did (its type, no modality_config)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, PreTrainedTokenizerFast

    backbone = path.with_name(path.name + "-backbone")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_byte_level_bpe(), bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>", model_max_length=40)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=40, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16, initializer_factor=4.0)
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(backbone)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(backbone)
    SentenceTransformer(modules=[Transformer(str(backbone))], device="cpu").save(str(path))
    if legacy:
        (path / "sentence_bert_config.json").unlink()
        (path / "modules.json").write_text(json.dumps(
            [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.CLIPModel"}]))
    return path


def _siglip_text(positions: int) -> tuple[Any, dict[str, Any]]:
    """SigLIP's and SigLIP2's text side: a byte-level BPE ending each text with ``</s>``, and a
    2-layer text tower's config over it."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_byte_level_bpe(post_processor="eos"), eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>", model_max_length=positions)
    return tokenizer, dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, max_position_embeddings=positions, projection_size=32,
                           pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                           eos_token_id=tokenizer.eos_token_id)


def save_siglip(path: Path, *, fixed_padding: bool = True, seed: int = 0) -> Path:
    """A SigLIP-style SentenceTransformer: a random 2-layer SigLIP (text tower of 16 positions,
    32x32 vision tower with its attention-pooling head) with a byte-level BPE tokenizer that
    appends </s> and a SigLIP image processor, saved as sentence-transformers 6's one text+image
    Transformer. SigLIP's text tower pools the last position whatever the attention mask, and was
    trained on texts padded to a fixed length: ``fixed_padding`` saves processing_kwargs that pad
    every text to max_length, as the model needs; without them sentence-transformers pads each
    batch to its longest text, and a text's embedding depends on its batch."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    backbone = path.with_name(path.name + "-backbone")
    positions = 16
    tokenizer, text_config = _siglip_text(positions)
    config = SiglipConfig(
        text_config=text_config,
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8))
    torch.manual_seed(seed)
    SiglipModel(config).eval().save_pretrained(backbone)
    processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    SiglipProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(backbone)
    padding = {"processing_kwargs": {"text": {"padding": "max_length", "max_length": positions}}} \
        if fixed_padding else {}
    SentenceTransformer(modules=[Transformer(str(backbone), **padding)], device="cpu").save(str(path))
    return path


def save_siglip2(path: Path, *, seed: int = 0) -> Path:
    """A SigLIP2-style SentenceTransformer, saved as SigLIP is (one text+image Transformer, texts
    padded to max_length), with SigLIP2's NaFlex image processor: each image resized to keep its
    aspect within a patch budget (16 patches of 16x16 here), the patches and their mask and grid
    passed to the vision tower, which interpolates its position embeddings to each image's grid."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from transformers import Siglip2Config, Siglip2ImageProcessorPil, Siglip2Model, Siglip2Processor

    backbone = path.with_name(path.name + "-backbone")
    positions = 16
    tokenizer, text_config = _siglip_text(positions)
    config = Siglip2Config(
        text_config=text_config,
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_patches=16, patch_size=16))
    torch.manual_seed(seed)
    Siglip2Model(config).eval().save_pretrained(backbone)
    processor = Siglip2ImageProcessorPil(patch_size=16, max_num_patches=16, do_convert_rgb=True)
    Siglip2Processor(image_processor=processor, tokenizer=tokenizer).save_pretrained(backbone)
    padding = {"processing_kwargs": {"text": {"padding": "max_length", "max_length": positions}}}
    SentenceTransformer(modules=[Transformer(str(backbone), **padding)], device="cpu").save(str(path))
    return path

"""Tiny random encoders of the families popular embedders, rerankers and SPLADE models use beyond
BERT and RoBERTa (DistilBERT, XLM-RoBERTa, DeBERTa-v2, ELECTRA, ALBERT, MPNet, a ModernBERT
classifier), each with the tokenizer kind its real models have, trained here on real text (no
network), and the chains the architecture matrix (tests/test_architectures.py) builds on them,
saved by sentence-transformers itself. Shapes are tiny_models.SMALL's: hidden 32, 2 layers, 2 heads."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

import tiny_models as tm

XLMR_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0-3, as in XLM-RoBERTa; <mask> is the last id
DEBERTA_SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]  # DeBERTa-v3's ids 0-3; [MASK] is the last id
ALBERT_SPECIALS = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]  # ALBERT's ids 0-4


def _unigram(specials: list[str], mask: str, *, vocab_size: int = 600) -> Tokenizer:
    """A sentencepiece-style Unigram (tiny_models.train_unigram's pieces) whose special tokens
    come first, and ``mask`` at the end unless it is among them."""
    pieces = list(tm._unigram_vocab(vocab_size)[len(tm.T5_SPECIALS):])
    vocab = [(s, 0.0) for s in specials] + pieces[:vocab_size - len(specials) - 1]
    if mask not in specials:
        vocab.append((mask, 0.0))
    unk = next(s for s in specials if "unk" in s.lower())
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=specials.index(unk)))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    return tokenizer


def _template(tokenizer: Tokenizer, cls: str, sep: str, *, roberta_pair: bool = False) -> Tokenizer:
    """``cls A sep``; pairs ``cls A sep sep B sep`` (RoBERTa's, no segment ids) or ``cls A sep B:1 sep:1``."""
    pair = f"{cls} $A {sep} {sep} $B {sep}" if roberta_pair else f"{cls} $A {sep} $B:1 {sep}:1"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=pair,
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))])
    return tokenizer


def _save(path: Path, model_class, config, tokenizer, *, seed: int) -> Path:
    torch.manual_seed(seed)
    model_class(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# --- backbones: ``head`` is "none" (the base model), "classifier" (one label) or "mlm" -----------


def save_tiny_distilbert(path: Path, *, head: str = "none", seed: int = 0) -> Path:
    """A 2-layer DistilBERT with a WordPiece tokenizer: no token_type_ids."""
    from transformers import (
        DistilBertConfig,
        DistilBertForMaskedLM,
        DistilBertForSequenceClassification,
        DistilBertModel,
        DistilBertTokenizerFast,
    )

    tokenizer = DistilBertTokenizerFast(tokenizer_object=tm.train_wordpiece(), unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                              max_position_embeddings=64, initializer_range=0.3, num_labels=1,
                              pad_token_id=tokenizer.pad_token_id)
    model_class = {"none": DistilBertModel, "classifier": DistilBertForSequenceClassification,
                   "mlm": DistilBertForMaskedLM}[head]
    return _save(path, model_class, config, tokenizer, seed=seed)


def save_tiny_xlm_roberta(path: Path, *, head: str = "none", seed: int = 0) -> Path:
    """A 2-layer XLM-RoBERTa with a sentencepiece-style Unigram tokenizer, XLM-R's special tokens
    and post-processor (``<s> A </s> </s> B </s>``): no token_type_ids."""
    from transformers import (
        XLMRobertaConfig,
        XLMRobertaForMaskedLM,
        XLMRobertaForSequenceClassification,
        XLMRobertaModel,
        XLMRobertaTokenizerFast,
    )

    tokenizer = XLMRobertaTokenizerFast(
        tokenizer_object=_template(_unigram(XLMR_SPECIALS, "<mask>"), "<s>", "</s>", roberta_pair=True),
        bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
        mask_token="<mask>")
    config = XLMRobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=66, type_vocab_size=1,
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id, num_labels=1, **tm.SMALL)
    model_class = {"none": XLMRobertaModel, "classifier": XLMRobertaForSequenceClassification,
                   "mlm": XLMRobertaForMaskedLM}[head]
    return _save(path, model_class, config, tokenizer, seed=seed)


def save_tiny_deberta_v2(path: Path, *, head: str = "none", seed: int = 0) -> Path:
    """A 2-layer DeBERTa-v3 (model_type deberta-v2): disentangled relative attention (c2p and p2c,
    log buckets, shared keys, no absolute positions, no token types), a Unigram tokenizer."""
    from transformers import (
        DebertaV2Config,
        DebertaV2ForSequenceClassification,
        DebertaV2Model,
        DebertaV2TokenizerFast,
    )

    tokenizer = DebertaV2TokenizerFast(
        tokenizer_object=_template(_unigram(DEBERTA_SPECIALS, "[MASK]"), "[CLS]", "[SEP]"),
        bos_token="[CLS]", eos_token="[SEP]", cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]",
        pad_token="[PAD]", mask_token="[MASK]")
    config = DebertaV2Config(vocab_size=len(tokenizer), max_position_embeddings=64, type_vocab_size=0,
                             relative_attention=True, position_buckets=16, max_relative_positions=-1,
                             pos_att_type=["p2c", "c2p"], position_biased_input=False, norm_rel_ebd="layer_norm",
                             share_att_key=True, pad_token_id=tokenizer.pad_token_id, num_labels=1, **tm.SMALL)
    model_class = {"none": DebertaV2Model, "classifier": DebertaV2ForSequenceClassification}[head]
    return _save(path, model_class, config, tokenizer, seed=seed)


def save_tiny_electra(path: Path, *, head: str = "none", seed: int = 0) -> Path:
    """A 2-layer ELECTRA discriminator with a WordPiece tokenizer (token_type_ids)."""
    from transformers import ElectraConfig, ElectraForSequenceClassification, ElectraModel, ElectraTokenizerFast

    tokenizer = ElectraTokenizerFast(tokenizer_object=tm.train_wordpiece(), unk_token="[UNK]", pad_token="[PAD]",
                                     cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = ElectraConfig(vocab_size=tokenizer.vocab_size, embedding_size=32, max_position_embeddings=64,
                           pad_token_id=tokenizer.pad_token_id, num_labels=1, **tm.SMALL)
    model_class = {"none": ElectraModel, "classifier": ElectraForSequenceClassification}[head]
    return _save(path, model_class, config, tokenizer, seed=seed)


def save_tiny_albert(path: Path, *, seed: int = 0) -> Path:
    """A 2-layer ALBERT (factorised 16-wide embeddings, one layer's weights shared by both) with a
    Unigram tokenizer and ALBERT's special tokens (token_type_ids)."""
    from transformers import AlbertConfig, AlbertModel, AlbertTokenizerFast

    tokenizer = AlbertTokenizerFast(tokenizer_object=_template(_unigram(ALBERT_SPECIALS, "[MASK]"), "[CLS]", "[SEP]"),
                                    bos_token="[CLS]", eos_token="[SEP]", cls_token="[CLS]", sep_token="[SEP]",
                                    unk_token="<unk>", pad_token="<pad>", mask_token="[MASK]")
    config = AlbertConfig(vocab_size=len(tokenizer), embedding_size=16, max_position_embeddings=64,
                          pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                          eos_token_id=tokenizer.sep_token_id, **tm.SMALL)
    return _save(path, AlbertModel, config, tokenizer, seed=seed)


MPNET_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def save_tiny_mpnet(path: Path, *, seed: int = 0) -> Path:
    """A 2-layer MPNet (relative position buckets on top of absolute positions) with a WordPiece
    tokenizer and MPNet's special tokens and pair template (``<s> A </s> </s> B </s>``)."""
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizerFast

    words = [t for t in tm._wordpiece_vocab(600) if t not in tm.WORDPIECE_SPECIALS]
    vocab = {t: i for i, t in enumerate([*MPNET_SPECIALS, "[UNK]", *words, "<mask>"])}
    wordpiece = tm.train_wordpiece()
    tokenizer_object = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tokenizer_object.normalizer, tokenizer_object.pre_tokenizer = wordpiece.normalizer, wordpiece.pre_tokenizer
    tokenizer_object.decoder = decoders.WordPiece()
    tokenizer = MPNetTokenizerFast(tokenizer_object=_template(tokenizer_object, "<s>", "</s>", roberta_pair=True),
                                   bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
                                   unk_token="[UNK]", pad_token="<pad>", mask_token="<mask>")
    config = MPNetConfig(vocab_size=len(tokenizer), max_position_embeddings=66, relative_attention_num_buckets=32,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, **tm.SMALL)
    return _save(path, MPNetModel, config, tokenizer, seed=seed)


def save_tiny_modernbert_classifier(path: Path, *, seed: int = 0) -> Path:
    """tiny_models.save_tiny_modernbert's shape with a one-label sequence-classification head."""
    from transformers import AutoConfig, ModernBertForSequenceClassification

    base = tm.save_tiny_modernbert(path, seed=seed)  # the config and tokenizer, overwritten below
    config = AutoConfig.from_pretrained(str(base), num_labels=1, classifier_pooling="mean")
    torch.manual_seed(seed)
    ModernBertForSequenceClassification(config).eval().save_pretrained(path)
    return path


# --- chains, as Row.save: (chain folder, scratch folder) -> the chain ----------------------------


def mean(save_backbone, *, normalize: bool = False):
    return lambda path, scratch: tm.save_chain(path, save_backbone(scratch / "backbone"), normalize=normalize)


def cls_normalize(save_backbone):
    """CLS pooling + Normalize (bge-m3's dense head)."""
    return lambda path, scratch: tm.save_chain(path, save_backbone(scratch / "backbone"), pooling="cls",
                                               normalize=True)


def cross_encoder(save_backbone):
    return lambda path, scratch: tm.save_sequence_classifier(path, save_backbone(scratch / "backbone",
                                                                                 head="classifier"))


def splade(save_backbone):
    return lambda path, scratch: tm.save_splade(path, save_backbone(scratch / "backbone", head="mlm"))


def modernbert_cross_encoder(path: Path, scratch: Path) -> Path:
    return tm.save_sequence_classifier(path, save_tiny_modernbert_classifier(scratch / "backbone"))

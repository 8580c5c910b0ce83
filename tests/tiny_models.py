"""Tiny sentence-transformers chains built locally for tests: random few-layer BERTs with a
WordPiece tokenizer trained here on real text. No network, no hub."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from packager.validators.texts import real_sentences

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(vocab_size: int = 600) -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    tokenizer.train_from_iterator(real_sentences()[:600], trainer=trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tokenizer


def save_tiny_bert(path: Path, *, seed: int = 0, max_position_embeddings: int = 64) -> Path:
    """A 2-layer BERT with weights large enough that its outputs depend strongly on the input."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    tokenizer = BertTokenizerFast(tokenizer_object=train_wordpiece(), unk_token="[UNK]", pad_token="[PAD]",
                                  cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max_position_embeddings, initializer_range=0.3)
    torch.manual_seed(seed)
    model = BertModel(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def train_byte_level_bpe(vocab_size: int = 700) -> Tokenizer:
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(real_sentences()[:600], trainer=trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", tokenizer.token_to_id("</s>")),
                                                            ("<s>", tokenizer.token_to_id("<s>")))
    return tokenizer


def save_tiny_roberta(path: Path, *, seed: int = 0) -> Path:
    """A 2-layer RoBERTa with a byte-level BPE tokenizer: no token_type_ids."""
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    tokenizer = RobertaTokenizerFast(tokenizer_object=train_byte_level_bpe(), bos_token="<s>", eos_token="</s>",
                                     sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                     mask_token="<mask>")
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=66, pad_token_id=tokenizer.pad_token_id,
                           type_vocab_size=1, initializer_range=0.3)
    torch.manual_seed(seed)
    model = RobertaModel(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_chain(path: Path, bert: Path, *, pooling: str = "mean", dense: bool = False, layer_norm: bool = False,
               normalize: bool = False, max_seq_length: int = 48, prompts: dict[str, str] | None = None,
               default_prompt_name: str | None = None) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules

    transformer = modules.Transformer(str(bert), max_seq_length=max_seq_length)
    dim = transformer.get_embedding_dimension()
    chain = [transformer, modules.Pooling(dim, pooling_mode=pooling)]
    if dense:
        torch.manual_seed(1)
        chain.append(modules.Dense(dim, 24, activation_function=torch.nn.Tanh()))
        dim = 24
    if layer_norm:
        chain.append(modules.LayerNorm(dim))
    if normalize:
        chain.append(modules.Normalize())
    SentenceTransformer(modules=chain, device="cpu", prompts=prompts,
                        default_prompt_name=default_prompt_name).save(str(path))
    return path

"""Tiny decoder-family chains for the architecture matrix, in the shapes the popular models built on
them have: EmbeddingGemma (Gemma 3 with bidirectional attention), gte-Qwen2 and its Qwen2
sequence-classification rerankers, LLM2Vec-style Llama, e5-mistral / SFR, and one remote-code
encoder written here (the nomic-embed-text / jina-v2 / gte-v1.5 shape). Random weights, tokenizers
trained locally by tests/tiny_models.py, chains saved by sentence-transformers itself; no network."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import processors

import tiny_models as tm

# Two layers, 4 query heads sharing 2 key/value heads (grouped-query attention, as all four families
# use), drawn large enough that outputs depend strongly on the input.
DECODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=8, max_position_embeddings=128, initializer_range=0.3)


def _bpe_tokenizer(template: str, *, padding_side: str):
    """The byte-level BPE of tiny_models with ``template`` as its post-processor (``<s>`` is BOS,
    ``</s>`` EOS)."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = tm.train_byte_level_bpe()
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template, pair=f"{template} {template.replace('$A', '$B:1').replace('</s>', '</s>:1')}",
        special_tokens=[("<s>", bos), ("</s>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", padding_side=padding_side)


def _save(path: Path, model_class, config, tokenizer) -> Path:
    torch.manual_seed(0)
    model_class(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _ids(tokenizer) -> dict:
    return dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)


def save_embedding_gemma(path: Path, scratch: Path) -> Path:
    """EmbeddingGemma: Gemma3TextModel with ``use_bidirectional_attention`` (every token sees every
    other, the sliding layers within their window), <bos> text <eos>, mean pooling, two Dense layers
    without bias or activation, Normalize."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules
    from transformers import Gemma3TextConfig, Gemma3TextModel

    tokenizer = _bpe_tokenizer("<s> $A </s>", padding_side="right")
    # A window of 8 (5 each side once bidirectional) so that the sliding layer masks within 48 tokens.
    config = Gemma3TextConfig(vocab_size=len(tokenizer), **DECODER, query_pre_attn_scalar=8, sliding_window=8,
                              layer_types=["sliding_attention", "full_attention"], use_bidirectional_attention=True,
                              **_ids(tokenizer))
    backbone = _save(scratch / "gemma3", Gemma3TextModel, config, tokenizer)
    transformer = modules.Transformer(str(backbone), max_seq_length=48)
    torch.manual_seed(1)
    chain = [transformer, modules.Pooling(32, pooling_mode="mean"),
             modules.Dense(32, 64, bias=False, activation_function=torch.nn.Identity()),
             modules.Dense(64, 24, bias=False, activation_function=torch.nn.Identity()), modules.Normalize()]
    SentenceTransformer(modules=chain, device="cpu").save(str(path))
    return path


def save_gte_qwen2(path: Path, scratch: Path) -> Path:
    """gte-Qwen2: Qwen2Model (biased q/k/v projections), text </s>, left padding, last-token pooling,
    Normalize."""
    from transformers import Qwen2Config, Qwen2Model

    tokenizer = _bpe_tokenizer("$A </s>", padding_side="left")
    config = Qwen2Config(vocab_size=len(tokenizer), **_decoder(), **_ids(tokenizer))
    backbone = _save(scratch / "qwen2", Qwen2Model, config, tokenizer)
    return tm.save_chain(path, backbone, pooling="lasttoken", normalize=True)


def save_qwen2_reranker(path: Path, scratch: Path) -> Path:
    """A Qwen2ForSequenceClassification reranker (one label, scored at the last real token)."""
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    tokenizer = _bpe_tokenizer("$A </s>", padding_side="left")
    config = Qwen2Config(vocab_size=len(tokenizer), **_decoder(), num_labels=1, **_ids(tokenizer))
    return tm.save_sequence_classifier(path, _save(scratch / "qwen2", Qwen2ForSequenceClassification, config,
                                                   tokenizer))


def save_llm2vec_llama(path: Path, scratch: Path) -> Path:
    """LLM2Vec-style Llama: LlamaModel, <bos> text, right padding, mean pooling."""
    from transformers import LlamaConfig, LlamaModel

    tokenizer = _bpe_tokenizer("<s> $A", padding_side="right")
    config = LlamaConfig(vocab_size=len(tokenizer), **DECODER, **_ids(tokenizer))
    return tm.save_chain(path, _save(scratch / "llama", LlamaModel, config, tokenizer), pooling="mean")


def save_e5_mistral(path: Path, scratch: Path) -> Path:
    """e5-mistral / SFR-Embedding: MistralModel, <bos> text <eos> (the </s> their tokenizer's
    post-processor appends), right padding, last-token pooling, Normalize."""
    from transformers import MistralConfig, MistralModel

    tokenizer = _bpe_tokenizer("<s> $A </s>", padding_side="right")
    config = MistralConfig(vocab_size=len(tokenizer), **DECODER, sliding_window=4096, **_ids(tokenizer))
    backbone = _save(scratch / "mistral", MistralModel, config, tokenizer)
    return tm.save_chain(path, backbone, pooling="lasttoken", normalize=True)


def _decoder() -> dict:
    """Qwen2's config derives head_dim from the hidden size."""
    return {k: v for k, v in DECODER.items() if k != "head_dim"}


# --- a remote-code encoder --------------------------------------------------------------------

CONFIGURATION = '''
from transformers import PretrainedConfig


class TinyRopeConfig(PretrainedConfig):
    model_type = "tiny_rope"

    def __init__(self, vocab_size=700, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, rotary_base=1000.0, layer_norm_eps=1e-6, initializer_range=0.3, **kwargs):
        self.vocab_size, self.hidden_size, self.num_hidden_layers = vocab_size, hidden_size, num_hidden_layers
        self.num_attention_heads, self.intermediate_size = num_attention_heads, intermediate_size
        self.rotary_base, self.layer_norm_eps, self.initializer_range = rotary_base, layer_norm_eps, initializer_range
        super().__init__(**kwargs)
'''

MODELING = '''
import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from .configuration_tiny_rope import TinyRopeConfig


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def inverse_frequencies(config):
    head_dim = config.hidden_size // config.num_attention_heads
    return 1.0 / config.rotary_base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)


class SelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.heads, self.head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.out = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, hidden, additive_mask, cos, sin):
        batch, length, _ = hidden.shape
        q, k, v = self.qkv(hidden).view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + additive_mask
        context = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out(context.transpose(1, 2).reshape(batch, length, -1))


class SwiGLU(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_up = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, hidden):
        gate, up = self.gate_up(hidden).chunk(2, dim=-1)
        return self.down(nn.functional.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = SelfAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, hidden, additive_mask, cos, sin):
        hidden = hidden + self.attention(self.norm1(hidden), additive_mask, cos, sin)
        return hidden + self.mlp(self.norm2(hidden))


class TinyRopePreTrainedModel(PreTrainedModel):
    config_class = TinyRopeConfig
    base_model_prefix = "tiny_rope"

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
        elif isinstance(module, TinyRopeModel):  # transformers 5 loads into empty tensors: buffers too
            module.inv_freq.copy_(inverse_frequencies(self.config))


class TinyRopeModel(TinyRopePreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.register_buffer("inv_freq", inverse_frequencies(config), persistent=False)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        hidden = self.embeddings(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device, dtype=torch.float32)
        angles = torch.outer(positions, self.inv_freq)
        cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
        additive_mask = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        for layer in self.layers:
            hidden = layer(hidden, additive_mask, cos, sin)
        return BaseModelOutput(last_hidden_state=self.norm(hidden))
'''


def save_remote_code_encoder(path: Path, scratch: Path) -> Path:
    """An encoder whose code is in its folder (``auto_map``), loaded only with trust_remote_code:
    pre-norm blocks, SwiGLU MLP, rotary positions, attention written out (softmax over q·k with the
    padding mask added by hand, no SDPA); mean pooling, Normalize."""
    from transformers import AutoConfig, AutoModel, RobertaTokenizerFast

    backbone = scratch / "tiny-rope"
    backbone.mkdir(parents=True)
    (backbone / "configuration_tiny_rope.py").write_text(CONFIGURATION, encoding="utf-8")
    (backbone / "modeling_tiny_rope.py").write_text(MODELING, encoding="utf-8")
    tokenizer = RobertaTokenizerFast(tokenizer_object=tm.train_byte_level_bpe(), bos_token="<s>", eos_token="</s>",
                                     sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                     mask_token="<mask>")
    (backbone / "config.json").write_text(json.dumps({
        "model_type": "tiny_rope", "architectures": ["TinyRopeModel"], "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "auto_map": {"AutoConfig": "configuration_tiny_rope.TinyRopeConfig",
                     "AutoModel": "modeling_tiny_rope.TinyRopeModel"}}), encoding="utf-8")
    config = AutoConfig.from_pretrained(backbone, trust_remote_code=True, local_files_only=True)
    torch.manual_seed(0)
    AutoModel.from_config(config, trust_remote_code=True).eval().save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    return _save_trusted_chain(path, backbone)


def _save_trusted_chain(path: Path, backbone: Path) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules

    trusted = {"trust_remote_code": True}
    transformer = modules.Transformer(str(backbone), max_seq_length=48, model_kwargs=trusted, config_kwargs=trusted,
                                      processor_kwargs=trusted)
    chain = [transformer, modules.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean"),
             modules.Normalize()]
    SentenceTransformer(modules=chain, device="cpu", trust_remote_code=True).save(str(path))
    return path

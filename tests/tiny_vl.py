"""Tiny Qwen-VL chains (Qwen2-VL, Qwen2.5-VL, Qwen3-VL: the families transformers 5 ships), each a
multimodal Transformer whose chat messages mix text and images, then lasttoken Pooling and
Normalize, saved by sentence-transformers itself.

Building and loading one needs torchvision (transformers constructs a Qwen-VL processor only with
its video processor, which needs it), so this runs in the environment scripts/setup.sh makes with
PACKAGER_VL=1 (.venv-vl), not in the tests' own. The Transformer is saved with
``processor_kwargs={"use_fast": False}``, so its images go through transformers' PIL backend,
the one the runtime reproduces.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tiny_models import train_byte_level_bpe

VL_FAMILIES = ("qwen2-vl", "qwen2.5-vl", "qwen3-vl")
VL_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
# Qwen-VL's chat template, cut to what an embedder renders: a default system turn, then each turn's
# text and images (an image as <|vision_start|><|image_pad|><|vision_end|>, which the processor
# expands to the image's tokens).
VL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The processors' pixel limits: small, so the tiny models see few patches, and real photos are
# resized down while small images are resized up.
MIN_PIXELS, MAX_PIXELS = 32 * 32 * 4, 32 * 32 * 48
# transformers' PIL backend for the images (its deprecated use_fast=False: backend="pil" would reach
# the video processor too, which has no PIL backend).
PIL_IMAGES = {"use_fast": False}


def save_tiny_vl(path: Path, family: str, *, seed: int = 0) -> Path:
    """A SentenceTransformer over a random 2-layer ``family`` model with its processor, saved at ``path``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
    from transformers import PreTrainedTokenizerFast

    raw = path.with_name(path.name + "-model")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_byte_level_bpe(post_processor="eos"), eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>", padding_side="left")
    tokenizer.add_tokens(VL_SPECIALS, special_tokens=True)
    tokenizer.chat_template = VL_TEMPLATE
    ids = dict(zip(VL_SPECIALS, tokenizer.convert_tokens_to_ids(VL_SPECIALS), strict=True))
    config, model_class = vl_config(family, len(tokenizer), ids, pad_token_id=tokenizer.pad_token_id,
                                    eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model_class(config).eval().save_pretrained(raw)
    _processor(family, tokenizer).save_pretrained(raw)
    # 256 tokens: enough for any image within MAX_PIXELS (48 tokens) and a text, and the parity
    # gate's long texts are cut there (a model without a limit is probed at 8192 tokens).
    transformer = Transformer(str(raw), max_seq_length=256, processor_kwargs=dict(PIL_IMAGES))
    SentenceTransformer(modules=[transformer, Pooling(32, pooling_mode="lasttoken"), Normalize()]).save(str(path))
    # sentence-transformers reads processor_kwargs from this file but does not write them: added as
    # a model's author adds them.
    config_file = path / "sentence_bert_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "processor_kwargs": PIL_IMAGES}))
    return path


def vl_config(family: str, vocab_size: int, ids: dict[str, int], **text: Any) -> tuple[Any, type]:
    """A tiny ``family`` model's config and model class (no processor, so no torchvision needed);
    ``ids`` maps VL_SPECIALS' vision tokens to their ids, ``text`` adds to the text config."""
    import transformers as tf

    text = {"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512, **text}
    tokens = {"vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"],
              "image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"]}
    mrope = {"type": "mrope", "mrope_section": [1, 1, 2]}
    vision = {"depth": 2, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": 32,
              "patch_size": 16, "spatial_merge_size": 2}
    if family == "qwen2-vl":
        return tf.Qwen2VLConfig(text_config=dict(text, rope_scaling=mrope),
                                vision_config={"depth": 2, "embed_dim": 16, "hidden_size": 32, "num_heads": 2,
                                               "mlp_ratio": 2, "patch_size": 16, "spatial_merge_size": 2},
                                **tokens), tf.Qwen2VLModel
    if family == "qwen2.5-vl":  # window attention in the first block, full in the second
        return tf.Qwen2_5_VLConfig(text_config=dict(text, rope_scaling=mrope),
                                   vision_config=dict(vision, window_size=64, fullatt_block_indexes=[1]),
                                   **tokens), tf.Qwen2_5_VLModel
    if family == "qwen3-vl":  # interleaved M-RoPE, learned patch positions, a deepstack layer
        return tf.Qwen3VLConfig(text_config=dict(text, head_dim=8, rope_scaling=dict(
                                    mrope, type="default", mrope_interleaved=True)),
                                vision_config=dict(vision, num_position_embeddings=64, deepstack_visual_indexes=[0]),
                                **tokens), tf.Qwen3VLModel
    raise ValueError(f"unknown Qwen-VL family {family!r}; known: {VL_FAMILIES}")


def _processor(family: str, tokenizer: Any) -> Any:
    """The family's processor: Qwen2-VL's image processor (Qwen3-VL uses it too) with 16-pixel
    patches and the pixel limits, the family's video processor (which needs torchvision)."""
    import transformers as tf

    names = {"qwen2-vl": ("Qwen2VLProcessor", "Qwen2VLVideoProcessor"),
             "qwen2.5-vl": ("Qwen2_5_VLProcessor", "Qwen2VLVideoProcessor"),
             "qwen3-vl": ("Qwen3VLProcessor", "Qwen3VLVideoProcessor")}[family]
    processor_class, video_processor_class = (getattr(tf, name) for name in names)
    image_processor = tf.Qwen2VLImageProcessor(patch_size=16, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    return processor_class(image_processor=image_processor, tokenizer=tokenizer,
                           video_processor=video_processor_class(patch_size=16), chat_template=VL_TEMPLATE)

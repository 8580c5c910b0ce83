"""A Qwen-VL Transformer (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) as one export step: the vision tower
over every image of a batch, its features scattered into the image tokens' positions, and the
language model with multimodal rotary positions.

Everything the model computes in Python from the image grids (patch positions, the images' and
windows' extents, Qwen2.5-VL's window order, Qwen3-VL's interpolated position taps) and from the
token ids (M-RoPE) is a graph input, which the runtime computes in numpy
(``runtime.vision_positions``). The tower's attention splits the patches by image with
``cu_seqlens.tolist()``, a value the exporter would freeze: here each block's attention is the
block's own projections over one sequence of patches, with a mask that keeps each patch to its
image (or window). Every other step is the model's own module.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from packager.errors import UnsupportedModuleError
from packager.runtime.enums import VisionFamily
from packager.runtime.routes import VisionSpec
from packager.runtime.vision_inputs import (
    IMAGE_SEGMENTS,
    INTERPOLATION_TAPS,
    INTERPOLATION_WEIGHTS,
    PATCH_POSITIONS,
    PIXEL_PATCHES,
    ROPE_POSITIONS,
    WINDOW_IDS,
    WINDOW_ORDER,
    vision_input_names,
)

# transformers' model types of the families this step exports.
_FAMILIES = {"qwen2_vl": VisionFamily.QWEN2_VL, "qwen2_5_vl": VisionFamily.QWEN2_5_VL,
             "qwen3_vl": VisionFamily.QWEN3_VL}


def vision_family(model_type: str | None) -> VisionFamily | None:
    """The Qwen-VL family of a transformers model type, None for any other model."""
    return _FAMILIES.get(model_type or "")


def resolve_vision(name: str, transformer: Any) -> VisionSpec:
    """What the runtime needs of the loaded Transformer's model: its family, image token and
    merge size, and the window (in merged patches) or the position table's side."""
    model = transformer.model
    family = vision_family(getattr(model.config, "model_type", None))
    visual = getattr(model, "visual", None)
    if family is None or visual is None:
        raise UnsupportedModuleError(f"route {name!r}: {type(model).__name__} is not a Qwen2-VL, Qwen2.5-VL or "
                                     "Qwen3-VL model, the vision-language families this version compiles")
    merge = int(visual.spatial_merge_size)
    window = table = None
    if family is VisionFamily.QWEN2_5_VL:
        window = int(visual.window_size) // merge // int(visual.patch_size)
    if family is VisionFamily.QWEN3_VL:
        table = int(visual.num_grid_per_side)
        if visual.interpolation_mode != "bilinear" or not visual.interpolation_align_corners:
            raise UnsupportedModuleError(f"route {name!r}: Qwen3-VL's patch positions are interpolated with "
                                         f"{visual.interpolation_mode!r} (align_corners="
                                         f"{visual.interpolation_align_corners}); the runtime repeats bilinear "
                                         "with aligned corners")
    return VisionSpec(family=family, image_token_id=int(model.config.image_token_id), merge_size=merge,
                      window=window, table_side=table)


class QwenVisionLanguage(torch.nn.Module):
    """The Transformer step of a Qwen-VL route: ``token_embeddings`` from the token ids, the
    patches and the positions (graph inputs named in ``runtime.vision_inputs``)."""

    def __init__(self, transformer: Any, spec: VisionSpec) -> None:  # sentence-transformers' Transformer
        super().__init__()
        model = transformer.model
        self.spec = spec
        self.visual = model.visual
        self.language_model = model.language_model
        self.rotary = inspect.getmodule(type(self.visual.blocks[0].attn)).apply_rotary_pos_emb_vision  # type: ignore[union-attr]
        self.full_blocks = set(getattr(self.visual, "fullatt_block_indexes", range(len(self.visual.blocks))))
        self.deepstack = list(getattr(self.visual, "deepstack_visual_indexes", ()))
        self.input_names = vision_input_names(spec)

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        ids = features["input_ids"]
        merged, stacked = self._images(features)
        embeds = self.language_model.get_input_embeddings()(ids)
        image_tokens = ids == self.spec.image_token_id
        mask = image_tokens.unsqueeze(-1).expand_as(embeds)
        embeds = embeds.masked_scatter(mask, merged.to(embeds.dtype))
        extra: dict[str, Any] = {}
        if self.deepstack:  # one row per image token, as the model adds them (not the blank image's rows)
            placed = [embeds.new_zeros(embeds.shape).masked_scatter(mask, layer.to(embeds.dtype))[image_tokens]
                      for layer in stacked]
            extra = {"visual_pos_masks": image_tokens, "deepstack_visual_embeds": placed}
        output = self.language_model(inputs_embeds=embeds, attention_mask=features["attention_mask"],
                                     position_ids=features[ROPE_POSITIONS], use_cache=False, **extra)
        features["token_embeddings"] = output.last_hidden_state
        return features

    def _images(self, features: dict[str, Any]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The tower's merged features of every image in the batch (in the order of their image
        tokens), and Qwen3-VL's deepstack features of them."""
        visual: Any = self.visual
        hidden = visual.patch_embed(features[PIXEL_PATCHES])
        if self.spec.table_side is not None:  # Qwen3-VL: learned positions, interpolated to the grid
            taps, weights = features[INTERPOLATION_TAPS], features[INTERPOLATION_WEIGHTS]
            hidden = hidden + (visual.pos_embed(taps) * weights.unsqueeze(-1)).sum(1).to(hidden.dtype)
        cos, sin = visual.rotary_pos_emb(hidden, features[PATCH_POSITIONS])
        segments = features[IMAGE_SEGMENTS]
        full = segments.unsqueeze(0) == segments.unsqueeze(1)
        windowed = full
        order = None
        if self.spec.window is not None:  # Qwen2.5-VL: merge blocks regrouped by window
            order = features[WINDOW_ORDER]
            hidden, cos, sin = (self._by_window(x, order) for x in (hidden, cos, sin))
            windows = features[WINDOW_IDS]
            windowed = windows.unsqueeze(0) == windows.unsqueeze(1)
        stacked = []
        for index, block in enumerate(visual.blocks):
            mask = full if index in self.full_blocks else windowed
            hidden = hidden + self._attention(block.attn, block.norm1(hidden), cos, sin, mask)
            hidden = hidden + block.mlp(block.norm2(hidden))
            if index in self.deepstack:
                stacked.append(visual.deepstack_merger_list[self.deepstack.index(index)](hidden))
        merged = visual.merger(hidden)
        if order is not None:
            merged = merged[torch.argsort(order)]
        return merged, stacked

    def _by_window(self, values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        unit = self.spec.merge_size**2
        return values.reshape(-1, unit, values.shape[-1])[order].reshape(-1, values.shape[-1])

    def _attention(self, attention: Any, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
        """The block's attention over all patches, each attending within its image (``mask``), as
        the block's own attention computes it image by image."""
        length = hidden.shape[0]
        heads = attention.num_heads
        query, key, value = attention.qkv(hidden).reshape(length, 3, heads, -1).permute(1, 0, 2, 3).unbind(0)
        query, key = self.rotary(query, key, cos, sin)
        query, key, value = (x.transpose(0, 1).unsqueeze(0) for x in (query, key, value))
        scale = getattr(attention, "scaling", query.shape[-1] ** -0.5)
        output = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale)
        return attention.proj(output.squeeze(0).transpose(0, 1).reshape(length, -1))

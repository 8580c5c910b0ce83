"""Run in .venv-vl by tests/test_qwen_vl.py (transformers needs torchvision for a Qwen-VL processor):
save each tiny Qwen-VL chain, load it as the build loads a reference, run its own preprocessing
on chat messages that mix texts and images, and put what the runtime's pieces compute beside it.
Prints one JSON object; the test asserts on it.

    python tests/vl_reference.py SCRATCH_FOLDER [INPUTS_JSON]

With INPUTS_JSON (texts, image paths, text+image dicts and messages, as JSON), each family's
reference embeddings of those inputs are printed too (``encoded``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from tiny_vl import MAX_PIXELS, MIN_PIXELS, VL_FAMILIES, save_tiny_vl  # tests/ is on the path of a script in it


def images() -> dict[str, object]:
    """Real images (matplotlib's sample data), odd modes and sizes, and images at the pixel limits:
    one with exactly MAX_PIXELS (32-pixel patch blocks, 8 x 6 of them), one far below MIN_PIXELS."""
    from PIL import Image

    from packager.validators.image_samples import real_images

    photo, logo, drawing = real_images().values()
    return {"photo": photo, "logo": logo, "drawing": drawing, "logo LA": logo.convert("LA"),
            "photo P": photo.convert("P"), "thin": photo.resize((31, 400)),
            "at max_pixels": photo.resize((32 * 8, 32 * 6)), "tiny": Image.new("RGB", (5, 7), (250, 10, 10))}


def messages(named: dict[str, object]) -> tuple[list, list]:
    """The chat inputs and, in order of appearance, the images they carry: a text-only query, an
    image-only document, text and image, several images in one message, the limits."""
    def turn(*parts: object) -> list:
        content = [{"type": "text", "text": p} if isinstance(p, str) else {"type": "image", "image": p}
                   for p in parts]
        return [{"role": "user", "content": content}]

    order = [["photo"], ["logo"], ["drawing", "logo LA", "photo P"], ["thin"], ["at max_pixels", "tiny"]]
    inputs = [turn("what is a compiler?"), turn(named["photo"]), turn("a logo:", named["logo"]),
              turn("three:", named["drawing"], "and", named["logo LA"], named["photo P"]),
              turn(named["thin"], "a tall one"), turn(named["at max_pixels"], named["tiny"], "limits")]
    return inputs, [named[name] for group in order for name in group]


def compare(folder: Path) -> dict[str, object]:
    import torch
    from sentence_transformers import SentenceTransformer

    from packager.chain.image_processor import resolve_image_spec
    from packager.chain.read import read_chain
    from packager.chain.reference import load_reference
    from packager.errors import UnsupportedModuleError
    from packager.runtime.image_inputs import ImagePipeline
    from packager.runtime.vision_positions import rope_positions

    model = load_reference(read_chain(str(folder)))
    transformer = model[0]
    spec = resolve_image_spec("message", transformer)
    assert spec.patches is not None
    inputs, carried = messages(images())
    features = model.preprocess(inputs)
    pixel_values, grid = ImagePipeline(spec).patches(carried)
    ids, mask = features["input_ids"].numpy(), features["attention_mask"].numpy()
    flags = ids == transformer.model.config.image_token_id
    runs = [int(n) for row, keep in zip(flags, mask.astype(bool), strict=True)
            for n in np.diff(np.flatnonzero(np.diff(np.r_[0, row[keep].astype(np.int8), 0])))[::2]]
    merge = spec.patches.merge_size
    want, _ = transformer.model.get_rope_index(features["input_ids"], mm_token_type_ids=features["mm_token_type_ids"],
                                               image_grid_thw=features["image_grid_thw"],
                                               attention_mask=features["attention_mask"])
    with torch.no_grad():
        embeddings = model.encode(inputs, convert_to_numpy=True)
    tower = _vision_tower(transformer.model, grid, features["image_grid_thw"])
    try:
        fast = SentenceTransformer(str(folder), device="cpu", processor_kwargs={"use_fast": True})
        resolve_image_spec("message", fast[0])
        refusal = None
    except UnsupportedModuleError as e:
        refusal = str(e)
    return {
        "image_processor": type(transformer.processor.image_processor).__name__,
        "pixel_values_equal": bool(np.array_equal(pixel_values, features["pixel_values"].numpy())),
        "pixel_values_shape": list(pixel_values.shape),
        "grid": grid.tolist(), "processor_grid": features["image_grid_thw"].tolist(),
        "image_tokens_per_run": runs, "tokens_per_image": (grid.prod(-1) // merge**2).tolist(),
        "token_types_equal": bool(np.array_equal(flags, features["mm_token_type_ids"].numpy() == 1)),
        "rope_positions_equal": bool(np.array_equal(rope_positions(flags, mask, grid, merge), want.numpy())),
        "embeddings_finite": bool(np.isfinite(embeddings).all()), "embeddings_shape": list(embeddings.shape),
        "largest_patched_pixels": int((grid[:, 1] * grid[:, 2]).max()) * spec.patches.patch_size**2,
        "limits": [MIN_PIXELS, MAX_PIXELS],
        "torchvision_backend_refusal": refusal,
        **tower,
    }


def _vision_tower(model: object, grid: np.ndarray, grid_thw: object) -> dict[str, bool]:
    """The vision tower's inputs the runtime computes, read from the loaded model's own settings,
    against the tower's own helpers: patch positions, and Qwen2.5-VL's windows or Qwen3-VL's
    interpolated positions where the family has them."""
    from transformers import vision_utils

    from packager.runtime.vision_positions import patch_interpolation, patch_positions, window_order

    visual = model.visual  # type: ignore[attr-defined]
    merge = visual.spatial_merge_size
    found = {"patch_positions_equal": bool(np.array_equal(
        patch_positions(grid, merge), vision_utils.get_vision_position_ids(grid_thw, merge).numpy()))}
    if hasattr(visual, "window_size"):
        order, windows = window_order(grid, merge, visual.window_size // merge // visual.patch_size)
        want, bounds = vision_utils.get_vision_window_index(grid_thw, spatial_merge_size=merge,
                                                            window_size=visual.window_size,
                                                            patch_size=visual.patch_size)
        found["windows_equal"] = bool(np.array_equal(order, want.numpy()) and np.array_equal(
            windows, np.repeat(np.arange(len(bounds) - 1), np.diff(bounds.numpy()))))
    if hasattr(visual, "num_grid_per_side"):
        taps, weights = patch_interpolation(grid, visual.num_grid_per_side, merge)
        want_taps, want_weights = vision_utils.get_vision_interpolation_indices_and_weights(
            grid_thw, num_grid_per_side=visual.num_grid_per_side, mode=visual.interpolation_mode,
            align_corners=visual.interpolation_align_corners, spatial_merge_size=merge)
        found["interpolation_equal"] = bool(np.array_equal(taps, want_taps.numpy())
                                            and np.array_equal(weights, want_weights.numpy()))
    return found


def main(scratch: Path, inputs: list | None) -> None:
    import torch
    import torchvision
    from sentence_transformers import SentenceTransformer

    results: dict[str, object] = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    for family in VL_FAMILIES:
        folder = save_tiny_vl(scratch / family, family)
        found = compare(folder)
        if inputs is not None:  # one call per input: sentence-transformers mangles messages batched with others
            model = SentenceTransformer(str(folder), device="cpu")
            found["encoded"] = [model.encode([x], convert_to_numpy=True)[0].tolist() for x in inputs]
        results[family] = found
    print(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()) if len(sys.argv) > 2 else None)

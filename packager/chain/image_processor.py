"""An image route's preprocessing, resolved from the image processor the reference actually runs
into the manifest's ``ImageSpec``, which the runtime reproduces in numpy and Pillow. Only
transformers' PIL backend with its own steps is resolved, and Qwen2-VL's PIL image processor
(resize to a patch grid, then patches) on top of them; anything else is refused here, naming
what differs, rather than reproduced approximately."""

from __future__ import annotations

from typing import Any

from packager.chain.st_internals import pil_backend
from packager.errors import UnsupportedModuleError
from packager.runtime.routes import ImageSpec, PatchSpec


def image_processor(route: str, module: Any) -> Any:
    processor = getattr(module, "processor", None)
    found = getattr(processor, "image_processor", None)
    if found is None:
        raise UnsupportedModuleError(f"route {route!r}: the Transformer takes images but has no image processor")
    return found


def resolve_image_spec(route: str, module: Any) -> ImageSpec:
    """What the reference's image processor does to an image, or a refusal naming what the runtime
    would not reproduce."""
    pil = pil_backend()
    found = image_processor(route, module)
    name = type(found).__name__
    if not isinstance(found, pil):
        raise UnsupportedModuleError(
            f"route {route!r}: the reference preprocesses images with {name} (backend "
            f"{getattr(found, 'backend', '?')!r}); the runtime reproduces transformers' PIL backend only. Build "
            "where torchvision is not installed (transformers then uses the PIL backend), or, for a processor that "
            "needs torchvision (a Qwen-VL processor's video part), add \"processor_kwargs\": {\"use_fast\": false} to "
            "the Transformer's sentence_bert_config.json, so the gate compares the preprocessing the artifact will "
            "run")
    processor: Any = found  # its settings are set per processor class
    from transformers import Qwen2VLImageProcessorPil

    # ImageSpec describes the PIL backend's own steps, and PatchSpec Qwen2-VL's on top of them; a
    # processor class that defines any method of its own (beyond __init__, which only sets
    # defaults) below the one reproduced may do something else.
    reproduced = Qwen2VLImageProcessorPil if isinstance(processor, Qwen2VLImageProcessorPil) else pil
    below = type(processor).__mro__[: type(processor).__mro__.index(reproduced)]
    overridden = sorted({k for cls in below for k, v in vars(cls).items()
                         if callable(v) and k not in ("__init__", "__init_subclass__")})
    if overridden:
        raise UnsupportedModuleError(f"route {route!r}: {name} has its own {', '.join(overridden)}, which the runtime "
                                     "does not reproduce")
    extra = [k for k in ("do_pad", "do_reduce_labels", "do_flip_channel_order")
             if getattr(processor, k, None)]
    if extra:
        raise UnsupportedModuleError(f"route {route!r}: {name} sets {', '.join(extra)}, which the runtime does not "
                                     "reproduce")
    mean = std = None
    if processor.do_normalize:
        mean, std = _per_channel(processor.image_mean), _per_channel(processor.image_std)
    rescale = float(processor.rescale_factor) if processor.do_rescale else None
    resample = int(processor.resample if processor.resample is not None else 2)
    if reproduced is Qwen2VLImageProcessorPil:
        return ImageSpec(convert_rgb=bool(processor.do_convert_rgb), shortest_edge=None, size=None, resample=resample,
                         crop=None, rescale=rescale, mean=mean, std=std, patches=_patch_rule(route, name, processor))
    shortest_edge, size = None, None
    if processor.do_resize:
        shortest_edge, size = _resize_rule(route, name, processor.size)
    crop = None
    if processor.do_center_crop:
        crop_size = processor.crop_size
        if not (crop_size.height and crop_size.width):
            raise UnsupportedModuleError(f"route {route!r}: {name} center-crops to {crop_size}, not a height and width")
        crop = (int(crop_size.height), int(crop_size.width))
    if (crop is None and shortest_edge is not None) or (not processor.do_resize and crop is None):
        raise UnsupportedModuleError(f"route {route!r}: {name} leaves images at varying sizes (no center crop after a "
                                     "shortest-edge resize); a graph of fixed image size is compiled")
    return ImageSpec(convert_rgb=bool(processor.do_convert_rgb), shortest_edge=shortest_edge, size=size,
                     resample=resample, crop=crop, rescale=rescale, mean=mean, std=std)


def _patch_rule(route: str, name: str, processor: Any) -> PatchSpec:
    """Qwen2-VL's resize to a multiple of the patch grid, between its pixel limits, then patches."""
    size = processor.size
    if not processor.do_resize or not (size.shortest_edge and size.longest_edge):
        raise UnsupportedModuleError(f"route {route!r}: {name} does not resize images between a least and a most "
                                     f"number of pixels (do_resize={processor.do_resize}, size={size}); its patch "
                                     "grid needs that resize")
    return PatchSpec(patch_size=int(processor.patch_size), temporal_patch_size=int(processor.temporal_patch_size),
                     merge_size=int(processor.merge_size), min_pixels=int(size.shortest_edge),
                     max_pixels=int(size.longest_edge))


def _resize_rule(route: str, name: str, size: Any) -> tuple[int | None, tuple[int, ...] | None]:
    """The backend's resize: shortest edge alone, or an exact height and width."""
    if size.shortest_edge and not size.longest_edge:
        return int(size.shortest_edge), None
    if size.height and size.width and not (size.shortest_edge or size.longest_edge):
        return None, (int(size.height), int(size.width))
    raise UnsupportedModuleError(f"route {route!r}: {name} resizes by {size}; the runtime reproduces a shortest edge "
                                 "or an exact height and width")


def _per_channel(values: Any) -> tuple[float, ...]:
    items = list(values) if isinstance(values, (list, tuple)) else [values] * 3
    return tuple(float(v) for v in items)


def sample_images() -> list[Any]:
    """Two images of different sizes and shapes to trace an image route with (batch of two, so the
    batch axis stays dynamic)."""
    from PIL import Image

    gradient = Image.linear_gradient("L").resize((48, 40)).convert("RGB")
    return [gradient, Image.new("RGB", (30, 64), (200, 120, 40))]

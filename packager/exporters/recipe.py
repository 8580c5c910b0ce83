"""What a recipe is: the protocol every export recipe follows, what it is given beyond the graph
(``RecipeContext``) and what it returns. Imports nothing heavy, so that reading a manifest or a
recipe's name costs no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from packager.runtime.enums import ChainKind, Format, Int8Arithmetic, Precision
from packager.runtime.routes import ChatSpec, TokenizerSpec
from packager.validators.report import Gate

if TYPE_CHECKING:
    from packager.chain.graph import RouteGraph


@dataclass(frozen=True)
class RecipeContext:
    """What a recipe may need beyond the graph: calibration inputs (texts, or pairs for
    cross-encoders), the chain kind, the gate its output must pass, and the route's tokenizer (and
    chat template) as written in the staging directory."""

    kind: ChainKind
    calibration: list
    gate: Gate
    tokenizer: TokenizerSpec | None  # None for an image route, calibrated on calibration_images()
    chat: ChatSpec | None = None


@dataclass(frozen=True)
class RecipeResult:
    files: list[str]  # written under the staging directory, graph file first
    details: dict[str, str] = field(default_factory=dict)  # what the recipe decided, for the manifest


class Recipe(Protocol):
    """Makes one route's graph files from ``graph``. The torch weights of ``graph.module`` are
    freed after the first variant's gate (``ReferenceRuns.release``): a recipe exports through
    ``packager.exporters.onnx.export_onnx``, whose torch export of the route is made once, by the
    first variant, and kept on disk, and never runs the module itself."""

    name: str
    format: Format
    precision: Precision
    calibrates: bool  # whether it reads the calibration inputs

    @property
    def int8_arithmetic(self) -> Int8Arithmetic | None:
        """int8 recipes: how their products come out on every CPU (the same integers, float
        products, or one of two ways, both gated), as built on this host; None for float ones."""

    def export(self, graph: RouteGraph, dest: Path, *, stem: str, context: RecipeContext) -> RecipeResult:
        ...


CALIBRATION_BATCH = 16


def calibration_feeds(graph: RouteGraph, root: Path, context: RecipeContext) -> tuple[list[dict], list]:
    """The calibration inputs as the loader would feed them (its own tokenizer and padding), in
    batches sorted by length, and the inputs in that same order; for an image route, the built-in
    calibration images through the runtime's image pipeline."""
    from packager.runtime.text import TextEncoder

    if context.tokenizer is None:
        return _image_feeds(graph)
    if graph.vision is not None:
        return _message_feeds(graph, root, context)
    encoder = TextEncoder.open(root, context.tokenizer, graph.input_names, context.chat)
    encodings, _ = encoder.encode(context.calibration, max_length=context.tokenizer.max_length)
    order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
    feeds = [encoder.pad([encodings[i] for i in order[start : start + CALIBRATION_BATCH]])
             for start in range(0, len(order), CALIBRATION_BATCH)]
    return feeds, [context.calibration[i] for i in order]


def _message_feeds(graph: RouteGraph, root: Path, context: RecipeContext) -> tuple[list[dict], list]:
    """A vision-language route's calibration inputs: the texts, the calibration images, and each
    image with a text, through the runtime's own processing, in batches as the runtime makes them
    (longest first, within its token budget: the vision tower's attention is quadratic in a batch's
    patches)."""
    from packager.runtime.image_inputs import ImagePipeline
    from packager.runtime.messages import conversation
    from packager.runtime.text import TextEncoder
    from packager.runtime.vision_route import VisionEncoder
    from packager.validators.image_samples import calibration_images

    assert context.tokenizer is not None and graph.image is not None and graph.vision is not None
    encoder = TextEncoder.open(root, context.tokenizer, ("input_ids", "attention_mask"), context.chat)
    vision = VisionEncoder(encoder, ImagePipeline(graph.image), graph.vision)
    images = calibration_images()
    inputs = [*context.calibration, *images, *({"text": text, "image": image}
                                               for text, image in zip(context.calibration, images, strict=False))]
    conversations = [conversation(x, i, None) for i, x in enumerate(inputs)]
    found = list(vision.batches(conversations, batch_size=CALIBRATION_BATCH, max_length=context.tokenizer.max_length,
                                task=None))
    return [feeds for _, feeds in found], [inputs[i] for batch, _ in found for i in batch]


def _image_feeds(graph: RouteGraph) -> tuple[list[dict], list]:
    from packager.runtime.image_inputs import ImagePipeline
    from packager.runtime.routes import PIXEL_VALUES
    from packager.validators.image_samples import calibration_images

    if graph.image is None:
        raise ValueError(f"route {graph.name!r} has neither a tokenizer nor an image pipeline")
    images = calibration_images()
    pipeline = ImagePipeline(graph.image)
    feeds = [{PIXEL_VALUES: pipeline.pixel_values(images[start : start + CALIBRATION_BATCH])}
             for start in range(0, len(images), CALIBRATION_BATCH)]
    return feeds, [f"image {i}" for i in range(len(images))]

"""An artifact's routes: each graph and what feeds it (the tokenizer of a text route, with its chat
template if it has one, or the image pipeline of an image route), its outputs, and the verbs
that run the routes. Part of the manifest (``manifest.Manifest.routes`` and ``verbs``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .enums import ExpansionStrategy, MessageFormat, Modality, OutputMeaning, Side, VisionFamily
from .errors import ArtifactIntegrityError
from .files import check_relative_path
from .jsonable import OMIT_DEFAULT

# Token ids, lengths and counts are int32 in tokenizers and the graphs; larger ones are forged.
INT32_LIMIT = 2**31 - 1
# The graph input that carries each text's prompt length ([batch]), for pooling without the prompt.
PROMPT_LENGTH = "prompt_length"
# The graph input of an image route: [batch, channels, height, width] float32.
PIXEL_VALUES = "pixel_values"
# The most pixels an image may have, decoded or resized (PIL's own decompression-bomb limit).
MAX_PIXELS = 89_478_485


@dataclass(frozen=True)
class WordsSpec:
    """A word tokenizer's rules: sentence-transformers' WhitespaceTokenizer, which the legacy
    WordEmbeddings and BoW input modules tokenize with. A text (lowercased first if ``lowercase``)
    is split on whitespace; each word is looked up as it is, then with ``punctuation`` stripped
    from both ends, then lowercased; a form found in ``stop_words`` first drops the word, one not
    in the vocabulary falls through to the next form, and a word none of whose forms is in the
    vocabulary is dropped. The vocabulary (word -> id) is the route's tokenizer file."""

    lowercase: bool
    punctuation: str
    stop_words: tuple[str, ...]

    def summary(self) -> str:
        """``lowercase=False, 386 stop words, ...``, for people (the stop words are hundreds)."""
        return (f"lowercase={self.lowercase}, {len(self.stop_words)} stop words, words stripped of "
                f"{self.punctuation!r}")


@dataclass(frozen=True)
class TokenizerSpec:
    """How texts become graph inputs: truncate to ``max_length`` tokens (special tokens included)
    on ``truncation_side``, pad each batch to its longest text on ``padding_side`` (with
    ``pad_to_max_length``, every text to the verb's max length: ``padding="max_length"``, what a
    text tower that reads a fixed position whatever the attention mask, SigLIP's, needs).
    ``pad_token`` and ``lowercase`` describe, they do not instruct: the lowercasing, if any, is
    already part of the tokenizer file's normalizer, exactly as the reference applies it. With
    ``words`` the route tokenizes by words (``WordsSpec``) and ``file`` is its vocabulary, a JSON
    object of word -> id, not a tokenizers file."""

    file: str
    max_length: int
    truncation_side: Side
    padding_side: Side
    pad_id: int
    pad_type_id: int
    pad_token: str
    lowercase: bool
    add_special_tokens: bool
    special_ids: tuple[int, ...]  # a prompt's trailing special token is not part of its length
    # Added without a new schema version: written only when set, so older manifests keep their digest.
    pad_to_max_length: bool = field(default=False, metadata={OMIT_DEFAULT: True})
    words: WordsSpec | None = field(default=None, metadata={OMIT_DEFAULT: True})

    def __post_init__(self) -> None:
        check_relative_path(self.file)
        if not 1 <= self.max_length <= INT32_LIMIT:
            raise ArtifactIntegrityError(f"manifest: tokenizer max_length must be in 1..{INT32_LIMIT}, "
                                         f"got {self.max_length}")
        if self.words is not None and (self.truncation_side is not Side.RIGHT or self.add_special_tokens):
            raise ArtifactIntegrityError("manifest: a word tokenizer keeps a text's first words and adds no special "
                                         "tokens")
        ids = {"pad_id": self.pad_id, "pad_type_id": self.pad_type_id,
               **{f"special_ids[{i}]": v for i, v in enumerate(self.special_ids)}}
        bad = [f"{k}={v}" for k, v in ids.items() if not 0 <= v <= INT32_LIMIT]
        if bad:
            raise ArtifactIntegrityError(f"manifest: token ids must be in 0..{INT32_LIMIT}: {', '.join(bad)}")


@dataclass(frozen=True)
class OutputSpec:
    name: str
    meaning: OutputMeaning
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class ChatSpec:
    """Texts reach this route as chat messages rendered by a Jinja template, as
    sentence-transformers does for a Transformer with a ``message`` modality: a text is one
    ``user`` message, a pair a ``query`` and a ``document`` message, a prompt a leading ``system``
    message. ``template`` is the template's file in the artifact; ``variables`` what the template
    sees besides the messages (special tokens, ``add_generation_prompt``...); ``task_variable``
    whether it receives the verb's task; ``restore_suffix`` whether a truncated render gets the
    template's tail written back over its last tokens."""

    template: str
    message_format: MessageFormat
    variables: dict[str, str | bool | int | float]
    task_variable: bool
    restore_suffix: bool
    # Rendered by a processor's apply_chat_template (a vision-language route), which tokenizes the
    # render with the tokenizer's special tokens unless it starts with the bos_token variable; a
    # tokenizer's apply_chat_template adds none.
    special_tokens: bool = field(default=False, metadata={OMIT_DEFAULT: True})

    def __post_init__(self) -> None:
        check_relative_path(self.template)


@dataclass(frozen=True)
class PatchSpec:
    """Qwen2-VL's patching of an image of any size (transformers' ``Qwen2VLImageProcessorPil``):
    resized so both sides are multiples of ``patch_size * merge_size`` with at least
    ``min_pixels`` and at most ``max_pixels`` pixels, the aspect ratio kept as closely as that
    allows (``smart_resize``); then cut into ``patch_size`` squares, ordered merge block by merge
    block, each square repeated ``temporal_patch_size`` times (an image is one frame of a video)
    and flattened channels first. An image becomes ``grid_h * grid_w`` rows of patches and
    ``grid_h * grid_w / merge_size**2`` image tokens in the text."""

    patch_size: int
    temporal_patch_size: int
    merge_size: int
    min_pixels: int
    max_pixels: int

    def __post_init__(self) -> None:
        if not (1 <= self.patch_size <= 1 << 10 and 1 <= self.merge_size <= 1 << 10
                and 1 <= self.temporal_patch_size <= 16):
            raise ArtifactIntegrityError(f"manifest: patch and merge sizes must be 1..1024 and the temporal patch "
                                         f"size 1..16, got {self}")
        if not 1 <= self.min_pixels <= self.max_pixels <= MAX_PIXELS:
            raise ArtifactIntegrityError(f"manifest: patched images need 1 <= min_pixels <= max_pixels <= "
                                         f"{MAX_PIXELS}, got {self.min_pixels} and {self.max_pixels}")

    @property
    def factor(self) -> int:
        """What both sides of a resized image are multiples of."""
        return self.patch_size * self.merge_size


@dataclass(frozen=True)
class VisionSpec:
    """A message route whose images are part of the text: a Qwen-VL model's (``family``). Each
    image of a message is patched (the route's ``ImageSpec.patches``) and stands in the rendered
    text as one ``image_token_id`` per merged patch (``merge_size`` x ``merge_size`` patches);
    the graph takes the patches and the positions ``runtime.vision_inputs`` computes, with
    Qwen2.5-VL's windows of ``window`` x ``window`` merged patches or Qwen3-VL's square table of
    ``table_side`` x ``table_side`` learned patch positions."""

    family: VisionFamily
    image_token_id: int
    merge_size: int
    window: int | None = None
    table_side: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.image_token_id <= INT32_LIMIT or not 1 <= self.merge_size <= 1 << 10:
            raise ArtifactIntegrityError(f"manifest: vision image token {self.image_token_id} / merge size "
                                         f"{self.merge_size}")
        wants = {"window": self.family is VisionFamily.QWEN2_5_VL, "table_side": self.family is VisionFamily.QWEN3_VL}
        for name, wanted in wants.items():
            value = getattr(self, name)
            if wanted != (value is not None) or not 1 <= (value or 1) <= 1 << 14:
                raise ArtifactIntegrityError(f"manifest: a {self.family.value} route {'needs' if wanted else 'has no'} "
                                             f"{name} (1..16384), got {value}")


@dataclass(frozen=True)
class ImageSpec:
    """How an image becomes an image route's ``pixel_values``, step by step as the saved image
    processor does it (transformers' PIL backend): to RGB (transparency composited onto white),
    resized with the PIL filter ``resample`` so its shorter edge is ``shortest_edge`` (the longer
    one scaled and rounded down) or to exactly ``size`` (height, width), center-cropped to
    ``crop`` (height, width; zero-padded where smaller), multiplied by ``rescale``, normalized
    with ``mean`` and ``std`` per channel, laid out channels first. A step that is None is
    skipped, as the processor skips it. With ``patches``, an image is resized by its rule instead
    (no shortest edge, size or crop) and cut into patches after it is normalized."""

    convert_rgb: bool
    shortest_edge: int | None
    size: tuple[int, ...] | None
    resample: int
    crop: tuple[int, ...] | None
    rescale: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    patches: PatchSpec | None = field(default=None, metadata={OMIT_DEFAULT: True})

    def __post_init__(self) -> None:
        sizes = [1 if self.shortest_edge is None else self.shortest_edge, *(self.size or (1, 1)),
                 *(self.crop or (1, 1))]
        if self.shortest_edge is not None and self.size is not None:
            raise ArtifactIntegrityError("manifest: an image is resized by shortest_edge or to a size, not both")
        if self.patches is not None and (self.shortest_edge, self.size, self.crop) != (None, None, None):
            raise ArtifactIntegrityError("manifest: a patched image is resized by its patch rule only (no "
                                         "shortest_edge, size or crop)")
        if self.crop is None and self.size is None and self.patches is None:
            raise ArtifactIntegrityError("manifest: an image route needs a fixed image size (a crop or a resize to a "
                                         "size): its graph takes one")
        numbers = [*(self.mean or ()), *(self.std or ()), 1.0 if self.rescale is None else self.rescale]
        if not all(math.isfinite(v) for v in numbers):
            raise ArtifactIntegrityError("manifest: image rescale, mean and std must be finite")
        if len(self.size or (1, 1)) != 2 or len(self.crop or (1, 1)) != 2 or not all(1 <= v <= 1 << 14
                                                                                       for v in sizes):
            raise ArtifactIntegrityError(f"manifest: image sizes must be (height, width) in 1..16384, got {self}")
        if self.resample not in range(6):  # PIL's filters: nearest, lanczos, bilinear, bicubic, box, hamming
            raise ArtifactIntegrityError(f"manifest: unknown PIL resample filter {self.resample}")
        if (self.mean is None) != (self.std is None) or len(self.mean or (0, 0, 0)) != 3 \
                or len(self.std or (1, 1, 1)) != 3 or not all(s > 0 for s in self.std or (1,)):
            raise ArtifactIntegrityError("manifest: image mean and std must be given together, three each, std > 0")


@dataclass(frozen=True)
class RouteSpec:
    """One graph and what feeds it: the tokenizer of a text route, or the image pipeline of an
    image route. Chains without a Router have one route (a CLIP-style chain one per modality)."""

    name: str
    graph: str
    inputs: tuple[str, ...]
    outputs: tuple[OutputSpec, ...]
    tokenizer: TokenizerSpec | None
    chat: ChatSpec | None = None
    modality: Modality = Modality.TEXT
    image: ImageSpec | None = None
    vision: VisionSpec | None = field(default=None, metadata={OMIT_DEFAULT: True})

    def __post_init__(self) -> None:
        check_relative_path(self.graph)
        patched = self.image is not None and self.image.patches is not None
        if self.modality is Modality.TEXT and (self.tokenizer is None or "input_ids" not in self.inputs
                                               or (self.image is not None) != (self.vision is not None)):
            raise ArtifactIntegrityError(f"manifest: text route {self.name!r} needs a tokenizer and an input_ids "
                                         "input, and an image pipeline only with a vision model's settings")
        if self.vision is not None and (not patched or self.chat is None):
            raise ArtifactIntegrityError(f"manifest: route {self.name!r} puts images into its messages: it needs a "
                                         "chat template and images cut into patches")
        if self.modality is Modality.IMAGE and (self.image is None or self.inputs != (PIXEL_VALUES,)
                                                or self.tokenizer is not None or self.chat is not None):
            raise ArtifactIntegrityError(f"manifest: image route {self.name!r} needs an image pipeline and the "
                                         f"{PIXEL_VALUES} input only")
        if patched and self.vision is None:
            raise ArtifactIntegrityError(f"manifest: route {self.name!r} cuts images into patches, which only a "
                                         "vision-language message route runs")

    @property
    def text(self) -> TokenizerSpec:
        """The tokenizer of a text route (the manifest checked it has one)."""
        if self.tokenizer is None:
            raise ArtifactIntegrityError(f"manifest: route {self.name!r} takes images, not texts")
        return self.tokenizer

    def output(self, meaning: OutputMeaning | str) -> OutputSpec | None:
        # By value: callers may hold the enum of another copy of this module (an artifact's loader).
        value = getattr(meaning, "value", meaning)
        return next((o for o in self.outputs if o.meaning.value == value), None)


@dataclass(frozen=True)
class ExpansionSpec:
    """ColBERT-style query expansion: padding positions up to ``length`` get ``token_id`` (and are
    attended to when ``attend``); the graph is told which positions they are."""

    strategy: ExpansionStrategy
    length: int
    token_id: int
    attend: bool

    def __post_init__(self) -> None:
        if not 1 <= self.length <= INT32_LIMIT or not 0 <= self.token_id <= INT32_LIMIT:
            raise ArtifactIntegrityError(f"manifest: query expansion length {self.length} / token {self.token_id}")


@dataclass(frozen=True)
class VerbSpec:
    """What one verb runs: its route, the task sentence-transformers passes for it (``query``,
    ``document`` or none), a per-task length that replaces the route tokenizer's ``max_length``
    (``query_length``, ``document_length``, ``processing_kwargs``), query expansion, and for a
    multi-vector encoder the graph output that says which tokens the task keeps."""

    route: str
    task: str | None = None
    max_length: int | None = None
    expansion: ExpansionSpec | None = None
    scoring_mask: str | None = None  # multi-vector encoders: the output whose true entries are the tokens kept
    image_route: str | None = None  # the route this verb's images take (CLIP-style chains)

    def __post_init__(self) -> None:
        if self.max_length is not None and not 1 <= self.max_length <= INT32_LIMIT:
            raise ArtifactIntegrityError(f"manifest: verb max_length must be positive, got {self.max_length}")

    def summary(self) -> str:
        """``route 'query' (task query, max length 16)``, for people."""
        notes = [f"task {self.task}"] if self.task else []
        notes += [f"max length {self.max_length}"] if self.max_length else []
        if self.expansion:
            notes.append(f"query expansion {self.expansion.strategy.value} to {self.expansion.length}")
        notes += [f"tokens kept by {self.scoring_mask}"] if self.scoring_mask else []
        notes += [f"images through route {self.image_route!r}"] if self.image_route else []
        return f"route {self.route!r}" + (f" ({', '.join(notes)})" if notes else "")

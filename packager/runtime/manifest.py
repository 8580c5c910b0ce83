"""The manifest: the only contract between build time and run time.

Everything the loader needs is resolved at build time and written here as frozen dataclasses,
serialised as sorted JSON with a ``schema_version``. Parsing is strict: unknown fields, missing
fields, wrong types and unknown schema versions are refused, because a loader that guesses is a
loader that silently drifts from the reference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import ArtifactIntegrityError
from .files import read_text
from .jsonable import from_jsonable, to_jsonable

SCHEMA_VERSION = 6  # 2: recipe and calibration; 3: sealed_sha256; 4: verb settings, chat templates;
# 5: multi-vector encoders (scoring masks, MaxSim); 6: image routes
MANIFEST_FILE = "manifest.json"
# A manifest lists every file of an artifact and of its source: a few hundred kB for the largest
# models. Anything much bigger is not a manifest (a link to /dev/zero, a forged file).
MANIFEST_LIMIT = 16 << 20
# Token ids, lengths and counts are int32 in tokenizers and the graphs; larger ones are forged.
INT32_LIMIT = 2**31 - 1
# The graph input that carries each text's prompt length ([batch]), for pooling without the prompt.
PROMPT_LENGTH = "prompt_length"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# What an artifact may require beyond the base runtime, with the versions it needs.
EXTRA_REQUIREMENTS = {"jinja2": ">=3.1.6", "pillow": ">=10.1"}
# Optional fields added to the manifest without a new schema version, written only when set.
_ADDED_IN_VERSION = ("embedding_ranges", "int8_arithmetic")
# The graph input of an image route: [batch, channels, height, width] float32.
PIXEL_VALUES = "pixel_values"


# The largest magnitude of an int8 weight that meets uint8 activations in an integer product
# (Int8Arithmetic.SATURATION_FREE): 255 * (64 + 64) = 32640 fits int16, so no pair saturates.
SATURATION_FREE_WEIGHT_LIMIT = 64


class Int8Arithmetic(str, Enum):
    """How an int8 artifact's integer products come out the same on every CPU.

    x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) multiply uint8 activations by int8
    weights with ``vpmaddubsw``, which adds each two adjacent products into an int16 with
    saturation; VNNI and AMX add them exactly in int32. With full-range weights (|w| <= 127)
    one model gives different outputs on the two (measured: a gate's min cosine 0.9996 on one,
    0.92 on the other), so a verdict taken on the build host would not hold on the servers."""

    # Every int8 weight an integer product reads is within SATURATION_FREE_WEIGHT_LIMIT (7-bit
    # weights, onnxruntime's reduce_range, NNCF's overflow fix on every layer): every kernel
    # computes the same integers.
    SATURATION_FREE = "saturation-free"
    # The int8 weights are dequantized to float before any product (weight-only compression,
    # int8 embedding tables): there is no integer product.
    FLOAT_PRODUCTS = "float-products"


class SourceKind(str, Enum):
    PATH = "path"
    HUB = "hub"  # a model id resolved from the local Hugging Face cache


class ModuleKind(str, Enum):
    """sentence-transformers' own module classes, as the build side classifies them."""

    TRANSFORMER = "Transformer"
    POOLING = "Pooling"
    DENSE = "Dense"
    NORMALIZE = "Normalize"
    LAYER_NORM = "LayerNorm"
    LOGIT_SCORE = "LogitScore"
    MLM_TRANSFORMER = "MLMTransformer"
    SPLADE_POOLING = "SpladePooling"
    SPARSE_STATIC_EMBEDDING = "SparseStaticEmbedding"
    SPARSE_AUTO_ENCODER = "SparseAutoEncoder"
    STATIC_EMBEDDING = "StaticEmbedding"
    MULTI_VECTOR_MASK = "MultiVectorMask"
    ROUTER = "Router"
    DROPOUT = "Dropout"  # the identity at inference
    NOT_COMPILED = "not compiled"  # sentence-transformers' own, safe to read, but no graph is made of it
    CUSTOM = "custom"  # only with --trust-remote-code


class ChainKind(str, Enum):
    SENTENCE_TRANSFORMER = "SentenceTransformer"
    CROSS_ENCODER = "CrossEncoder"
    SPARSE_ENCODER = "SparseEncoder"
    MULTI_VECTOR_ENCODER = "MultiVectorEncoder"


class Format(str, Enum):
    ONNX = "onnx"
    OPENVINO = "openvino"


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class Similarity(str, Enum):
    COSINE = "cosine"
    DOT = "dot"
    EUCLIDEAN = "euclidean"
    MANHATTAN = "manhattan"
    MAXSIM = "maxsim"  # late interaction: per query token the best document token, summed
    MEAN_MAXSIM = "meanmaxsim"  # MaxSim divided by the query's token count


class OutputMeaning(str, Enum):
    SENTENCE_EMBEDDING = "sentence_embedding"  # dense [batch, dim]
    TOKEN_EMBEDDINGS = "token_embeddings"  # dense [batch, sequence, hidden]
    SPARSE_EMBEDDING = "sparse_embedding"  # [batch, dim], mostly zeros; the loader returns indices and values
    SCORES = "scores"  # cross-encoder logits [batch, num_labels], before the activation
    SCORING_MASK = "scoring_mask"  # [batch, sequence]: the tokens a multi-vector encoder keeps for one task


class Activation(str, Enum):
    """The activation a CrossEncoder applies to its logits in predict()."""

    IDENTITY = "identity"
    SIGMOID = "sigmoid"
    SOFTMAX = "softmax"
    TANH = "tanh"


class Side(str, Enum):
    LEFT = "left"
    RIGHT = "right"


class ParityStatus(str, Enum):
    PENDING = "pending"  # only while the artifact is staged and its gate is running
    PASSED = "passed"
    FAILED_ALLOWED = "failed-allowed"  # the gate failed and the user published it anyway


def check_relative_path(path: str) -> None:
    """Refuse paths that could leave the artifact directory."""
    pure = PurePosixPath(path)
    if not path or "\\" in path or pure.is_absolute() or ".." in pure.parts or pure.parts[0] in ("", "."):
        raise ArtifactIntegrityError(f"manifest: path {path!r} must be relative, '/'-separated and stay inside the "
                                     "artifact")


@dataclass(frozen=True)
class FileDigest:
    path: str
    sha256: str
    size: int

    def __post_init__(self) -> None:
        check_relative_path(self.path)
        if not _SHA256.match(self.sha256) or self.size < 0:
            raise ArtifactIntegrityError(f"manifest: bad digest for {self.path!r}")


@dataclass(frozen=True)
class TokenizerSpec:
    """How texts become graph inputs: truncate to ``max_length`` tokens (special tokens included)
    on ``truncation_side``, pad each batch to its longest text on ``padding_side``.
    ``pad_token`` and ``lowercase`` describe, they do not instruct: the lowercasing, if any, is
    already part of the tokenizer file's normalizer, exactly as the reference applies it."""

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

    def __post_init__(self) -> None:
        check_relative_path(self.file)
        if not 1 <= self.max_length <= INT32_LIMIT:
            raise ArtifactIntegrityError(f"manifest: tokenizer max_length must be in 1..{INT32_LIMIT}, "
                                         f"got {self.max_length}")
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


class MessageFormat(str, Enum):
    """How a chat message's content is written: a string, or a list of typed parts."""

    FLAT = "flat"
    STRUCTURED = "structured"


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

    def __post_init__(self) -> None:
        check_relative_path(self.template)


class Modality(str, Enum):
    TEXT = "text"
    IMAGE = "image"


@dataclass(frozen=True)
class ImageSpec:
    """How an image becomes an image route's ``pixel_values``, step by step as the saved image
    processor does it (transformers' PIL backend): to RGB (transparency composited onto white),
    resized with the PIL filter ``resample`` so its shorter edge is ``shortest_edge`` (the longer
    one scaled and rounded down) or to exactly ``size`` (height, width), center-cropped to
    ``crop`` (height, width; zero-padded where smaller), multiplied by ``rescale``, normalized
    with ``mean`` and ``std`` per channel, laid out channels first. A step that is None is
    skipped, as the processor skips it."""

    convert_rgb: bool
    shortest_edge: int | None
    size: tuple[int, ...] | None
    resample: int
    crop: tuple[int, ...] | None
    rescale: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    def __post_init__(self) -> None:
        sizes = [1 if self.shortest_edge is None else self.shortest_edge, *(self.size or (1, 1)),
                 *(self.crop or (1, 1))]
        if self.shortest_edge is not None and self.size is not None:
            raise ArtifactIntegrityError("manifest: an image is resized by shortest_edge or to a size, not both")
        if self.crop is None and self.size is None:
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

    def __post_init__(self) -> None:
        check_relative_path(self.graph)
        if self.modality is Modality.TEXT and (self.tokenizer is None or "input_ids" not in self.inputs
                                               or self.image is not None):
            raise ArtifactIntegrityError(f"manifest: text route {self.name!r} needs a tokenizer and an input_ids "
                                         "input, and no image pipeline")
        if self.modality is Modality.IMAGE and (self.image is None or self.inputs != (PIXEL_VALUES,)
                                                or self.tokenizer is not None or self.chat is not None):
            raise ArtifactIntegrityError(f"manifest: image route {self.name!r} needs an image pipeline and the "
                                         f"{PIXEL_VALUES} input only")

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


class ExpansionStrategy(str, Enum):
    FIXED = "fixed"  # every query padded (or cut) to exactly ``length`` tokens
    MIN = "min"  # queries shorter than ``length`` padded up to it


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


@dataclass(frozen=True)
class ScoringSpec:
    """CrossEncoder scores: ``num_labels`` logits per pair, and the activation predict() applies."""

    num_labels: int
    activation: Activation

    def __post_init__(self) -> None:
        if not 1 <= self.num_labels <= INT32_LIMIT:
            raise ArtifactIntegrityError(f"manifest: num_labels must be positive, got {self.num_labels}")


@dataclass(frozen=True)
class SparseSpec:
    """SparseEncoder outputs. ``max_active_dims`` keeps the largest values per text (None: all);
    ``max_active_dims_ceiling`` is the most the graph can return (a sparse autoencoder's k,
    fixed at export; None: no ceiling); ``vocabulary`` is the tokenizer file whose ids name the
    dimensions (None: latent features without token names)."""

    max_active_dims: int | None
    max_active_dims_ceiling: int | None
    vocabulary: str | None

    def __post_init__(self) -> None:
        for name in ("max_active_dims", "max_active_dims_ceiling"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= INT32_LIMIT:
                raise ArtifactIntegrityError(f"manifest: sparse.{name} must be positive, got {value}")
        if self.vocabulary is not None:
            check_relative_path(self.vocabulary)


@dataclass(frozen=True)
class RecipeSpec:
    """How the graphs were made: the recipe's name and what it decided (nodes kept in float...)."""

    name: str
    details: dict[str, str]


@dataclass(frozen=True)
class CalibrationSpec:
    """The inputs a quantizing recipe calibrated on: where from, how many, their sha256."""

    source: str
    samples: int
    sha256: str


@dataclass(frozen=True)
class ModuleEntry:
    """One module of the source chain, as read from its modules.json (descriptive)."""

    name: str
    kind: ModuleKind
    type: str


@dataclass(frozen=True)
class SourceSpec:
    kind: SourceKind
    location: str
    revision: str | None
    sha256: str
    files: tuple[FileDigest, ...]


@dataclass(frozen=True)
class EmbeddingRanges:
    """Per-dimension minima and maxima of one verb's embeddings of the calibration texts, as the
    torch reference made them at build time: the buckets of the int8 and uint8 output precisions."""

    minimum: tuple[float, ...]
    maximum: tuple[float, ...]

    def __post_init__(self) -> None:
        problem = ranges_problem(self.minimum, self.maximum)
        if problem is not None:
            raise ArtifactIntegrityError(f"manifest: embedding ranges: {problem}")


FLOAT32_MAX = 3.4028234663852886e38


def ranges_problem(minimum: Any, maximum: Any) -> str | None:
    """What is wrong with int8/uint8 ranges (per-dimension minima and maxima), or None: the one
    rule for the manifest's recorded ranges and a caller's ``ranges=`` (``precision.quantize``).
    Each bound must be a float32 number and at most its maximum, and each span one float32 can
    hold: otherwise the buckets run backwards or are infinite, and the codes mean nothing."""
    if len(minimum) != len(maximum) or not minimum:
        return f"minima and maxima must be of one length, at least 1; got {len(minimum)} and {len(maximum)}"
    for i, (low, high) in enumerate(zip(minimum, maximum, strict=True)):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            return f"dimension {i}: the bounds must be numbers, got {type(low).__name__} and {type(high).__name__}"
        if not (abs(low) <= FLOAT32_MAX and abs(high) <= FLOAT32_MAX):  # NaN and infinities fail too
            return f"dimension {i}: the bounds must be finite float32 numbers, got {low!r} and {high!r}"
        if low > high:
            return f"dimension {i}: the minimum {low!r} is above the maximum {high!r}"
        if high - low > FLOAT32_MAX:
            return f"dimension {i}: the span from {low!r} to {high!r} is larger than a float32 holds"
    return None


@dataclass(frozen=True)
class ParitySummary:
    status: ParityStatus
    texts: int
    texts_sha256: str
    gate: dict[str, float]
    metrics: dict[str, float]
    failures: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    schema_version: int
    name: str
    chain_kind: ChainKind
    format: Format
    precision: Precision
    recipe: RecipeSpec
    calibration: CalibrationSpec | None  # None when no recipe calibrated
    modules: tuple[ModuleEntry, ...]
    routes: tuple[RouteSpec, ...]
    verbs: dict[str, VerbSpec]  # what each verb runs: encode, encode_query, encode_document, predict
    prompts: dict[str, str]
    default_prompt_name: str | None
    similarity: Similarity | None  # None for cross-encoders
    embedding_dimension: int | None  # None for cross-encoders
    scoring: ScoringSpec | None
    sparse: SparseSpec | None
    source: SourceSpec
    tools: dict[str, str]
    parity: ParitySummary
    built_at: str
    files: tuple[FileDigest, ...] = field(default=())
    sealed_sha256: str = ""  # content_digest() when sealed: an edited manifest is refused like an edited file
    # Packages the runtime needs for this artifact beyond numpy, tokenizers and its engine
    # (jinja2 for chat templates), imported only for artifacts that list them.
    requires: tuple[str, ...] = ()
    # Dense embedders: each verb's ranges for the int8/uint8 output precisions (runtime/precision.py).
    embedding_ranges: dict[str, EmbeddingRanges] = field(default_factory=dict)
    # int8 artifacts: why their integer products are the same on every CPU (Int8Arithmetic).
    int8_arithmetic: Int8Arithmetic | None = None

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ArtifactIntegrityError(_schema_message(self.schema_version))
        if not self.routes:
            raise ArtifactIntegrityError("manifest: no routes")
        names = [r.name for r in self.routes]
        if len(set(names)) != len(names):
            raise ArtifactIntegrityError(f"manifest: duplicate route names {names}")
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise ArtifactIntegrityError(f"manifest: default prompt {self.default_prompt_name!r} is not among the "
                                         "prompts")
        modality = {r.name: r.modality for r in self.routes}
        wrong = {verb: (spec.route, spec.image_route) for verb, spec in self.verbs.items()
                 if modality.get(spec.route) is not Modality.TEXT
                 or spec.image_route is not None and modality.get(spec.image_route) is not Modality.IMAGE}
        if not self.verbs or wrong:
            raise ArtifactIntegrityError(f"manifest: verbs {self.verbs} must name existing routes {names}, a text "
                                         "route for texts and an image route for images")
        if any(m is Modality.IMAGE for m in modality.values()) and (
                self.chain_kind is not ChainKind.SENTENCE_TRANSFORMER or "pillow" not in self.requires):
            raise ArtifactIntegrityError("manifest: image routes belong to SentenceTransformer chains and require "
                                         "pillow")
        multi_vector = self.chain_kind is ChainKind.MULTI_VECTOR_ENCODER
        late = self.similarity in (Similarity.MAXSIM, Similarity.MEAN_MAXSIM)
        if multi_vector != late:
            function = getattr(self.similarity, "value", None)
            raise ArtifactIntegrityError(f"manifest: similarity {function!r} for a {self.chain_kind.value}: MaxSim is "
                                         "for multi-vector encoders, and only for them")
        for verb, spec in self.verbs.items():
            route = self.route(spec.route)
            mask = next((o for o in route.outputs if o.name == spec.scoring_mask
                         and o.meaning is OutputMeaning.SCORING_MASK), None)
            if multi_vector != (spec.scoring_mask is not None) or (multi_vector and mask is None):
                raise ArtifactIntegrityError(f"manifest: verb {verb}: a scoring mask output of its route is required "
                                             "for multi-vector encoders and only for them")
        if (self.scoring is None) != (self.chain_kind is not ChainKind.CROSS_ENCODER):
            raise ArtifactIntegrityError("manifest: scoring is required for cross-encoders and only for them")
        if (self.sparse is None) != (self.chain_kind is not ChainKind.SPARSE_ENCODER):
            raise ArtifactIntegrityError("manifest: sparse is required for sparse encoders and only for them")
        unknown_requirements = set(self.requires) - set(EXTRA_REQUIREMENTS)
        if unknown_requirements:
            raise ArtifactIntegrityError(f"manifest: requires {sorted(unknown_requirements)}; this loader knows "
                                         f"{sorted(EXTRA_REQUIREMENTS)}")
        if any(r.chat is not None for r in self.routes) and "jinja2" not in self.requires:
            raise ArtifactIntegrityError("manifest: routes with a chat template require jinja2")
        if self.embedding_dimension is not None and not 1 <= self.embedding_dimension <= INT32_LIMIT:
            raise ArtifactIntegrityError(f"manifest: embedding_dimension must be positive, got "
                                         f"{self.embedding_dimension}")
        if self.int8_arithmetic is not None and self.precision is not Precision.INT8:
            raise ArtifactIntegrityError(f"manifest: int8_arithmetic belongs to int8 artifacts, not "
                                         f"{self.precision.value}")
        wrong_ranges = [verb for verb, r in self.embedding_ranges.items()
                        if verb not in self.verbs or len(r.minimum) != self.embedding_dimension]
        if wrong_ranges:
            raise ArtifactIntegrityError(f"manifest: embedding ranges of {wrong_ranges} must belong to verbs and have "
                                         f"{self.embedding_dimension} dimensions")

    def _jsonable(self) -> dict[str, Any]:
        """The manifest as JSON values, without the fields added within this schema version when
        they are empty: a manifest sealed before them keeps its digest."""
        data = to_jsonable(self)
        return {k: v for k, v in data.items() if k not in _ADDED_IN_VERSION or v}

    def route(self, name: str) -> RouteSpec:
        for route in self.routes:
            if route.name == name:
                return route
        raise ArtifactIntegrityError(f"manifest: no route {name!r}; routes: {[r.name for r in self.routes]}")

    def to_json(self) -> str:
        return json.dumps(self._jsonable(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"

    def content_digest(self) -> str:
        """sha256 of everything in the manifest but ``sealed_sha256``, as canonical JSON."""
        body = json.dumps(dataclasses.replace(self, sealed_sha256="")._jsonable(), sort_keys=True,
                          ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(body.encode("utf-8")).hexdigest()

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            data = json.loads(text)
        # RecursionError: nested beyond any real manifest; ValueError: also an integer of more
        # digits than Python converts (sys.get_int_max_str_digits)
        except (ValueError, RecursionError) as e:
            raise ArtifactIntegrityError(f"manifest: not valid JSON ({type(e).__name__}: {str(e)[:200]})") from None
        if not isinstance(data, dict):
            raise ArtifactIntegrityError("manifest: top level must be an object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ArtifactIntegrityError(_schema_message(version))
        return from_jsonable(cls, data, "manifest")


def read_manifest(artifact_dir: str | Path, *, sha256: str | None = None) -> Manifest:
    """The artifact's manifest, parsed strictly: a regular file (not a link, FIFO or directory)
    of at most MANIFEST_LIMIT bytes of UTF-8 JSON; with ``sha256``, only if its bytes have that
    digest (the pin a forger who reseals the manifest cannot meet), checked on the text parsed
    (strict UTF-8 encodes back to exactly the bytes read)."""
    path = Path(artifact_dir) / MANIFEST_FILE
    try:
        text = read_text(path, limit=MANIFEST_LIMIT, error=ArtifactIntegrityError, follow_links=False)
    except FileNotFoundError as e:
        raise ArtifactIntegrityError(f"{artifact_dir}: no {MANIFEST_FILE}; this is not a packaged artifact") from e
    actual = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if sha256 is not None and actual != sha256:
        raise ArtifactIntegrityError(f"{path}: sha256 {actual} is not the pinned {sha256}; this is not the artifact "
                                     "that was pinned (changed and resealed, or another build); refusing to load it")
    return Manifest.from_json(text)


def _schema_message(version: Any) -> str:
    return (
        f"manifest: unknown schema_version {version!r}; this loader reads version {SCHEMA_VERSION}. "
        "Rebuild the artifact with this packager version, or load it with the runtime of the version that built "
        "it (the loader shipped inside it runs its own code before any check: only for a copy you made yourself)."
    )

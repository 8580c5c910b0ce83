"""The manifest: the only contract between build time and run time.

Everything the loader needs is resolved at build time and written here as frozen dataclasses,
serialised as sorted JSON with a ``schema_version``. Parsing is strict: unknown fields, missing
fields, wrong types and unknown schema versions are refused, because a loader that guesses is a
loader that silently drifts from the reference.

The closed sets its fields take are in ``enums``, the records of its routes and verbs in
``routes``; ``Manifest.__post_init__`` runs its named checks (``_check_routes``...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .enums import (
    Activation,
    ChainKind,
    Format,
    Int8Arithmetic,
    MessageFormat,
    Modality,
    ModuleKind,
    OutputMeaning,
    ParityStatus,
    Precision,
    Similarity,
    SourceKind,
)
from .errors import ArtifactIntegrityError
from .files import check_relative_path, read_text
from .jsonable import OMIT_DEFAULT, from_jsonable, to_jsonable
from .routes import INT32_LIMIT, RouteSpec, VerbSpec
from .vision_inputs import vision_input_names

SCHEMA_VERSION = 6  # 2: recipe and calibration; 3: sealed_sha256; 4: verb settings, chat templates;
# 5: multi-vector encoders (scoring masks, MaxSim); 6: image routes
MANIFEST_FILE = "manifest.json"
# A manifest lists every file of an artifact and of its source: a few hundred kB for the largest
# models. Anything much bigger is not a manifest (a link to /dev/zero, a forged file).
MANIFEST_LIMIT = 16 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# What an artifact may require beyond the base runtime, with the versions it needs.
EXTRA_REQUIREMENTS = {"jinja2": ">=3.1.6", "pillow": ">=10.1"}


# The largest magnitude of an int8 weight that meets uint8 activations in an integer product
# (Int8Arithmetic.SATURATION_FREE): 255 * (64 + 64) = 32640 fits int16, so no pair saturates.
SATURATION_FREE_WEIGHT_LIMIT = 64


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


# The prefix of the metrics of an int8 artifact's second gate run, multiplying in float as CPUs
# without VNNI do (Int8Arithmetic.VNNI_OR_FLOAT_PRODUCTS).
FLOAT_PRODUCTS_RUN = "float_products"


@dataclass(frozen=True)
class ParitySummary:
    status: ParityStatus
    texts: int
    texts_sha256: str
    gate: dict[str, float]
    metrics: dict[str, float]
    failures: tuple[str, ...] = ()


def _check_vision(route: RouteSpec) -> None:
    """A vision-language route's parts agree: the graph's inputs are its family's, the merge size is
    the patch rule's, and only such a route has a processor's special tokens."""
    vision, image, chat = route.vision, route.image, route.chat
    if vision is None:
        if chat is not None and chat.special_tokens:
            raise ArtifactIntegrityError(f"manifest: route {route.name!r}: special_tokens belong to a vision-language "
                                         "route's chat template")
        return
    patches = image.patches if image else None
    if chat is None or chat.message_format is not MessageFormat.STRUCTURED:
        raise ArtifactIntegrityError(f"manifest: route {route.name!r}: a vision-language route's images are parts of "
                                     "structured chat messages")
    if route.inputs != vision_input_names(vision) or patches is None or patches.merge_size != vision.merge_size:
        raise ArtifactIntegrityError(f"manifest: route {route.name!r}: a {vision.family.value} route takes "
                                     f"{vision_input_names(vision)} and merges patches as its patch rule does")


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
    embedding_ranges: dict[str, EmbeddingRanges] = field(default_factory=dict, metadata={OMIT_DEFAULT: True})
    # int8 artifacts: why their integer products are the same on every CPU (Int8Arithmetic).
    int8_arithmetic: Int8Arithmetic | None = field(default=None, metadata={OMIT_DEFAULT: True})

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ArtifactIntegrityError(_schema_message(self.schema_version))
        self._check_routes()
        self._check_verbs()
        self._check_kind()
        self._check_requirements()
        self._check_embeddings()

    def _check_routes(self) -> None:
        """At least one route, each named once."""
        names = [r.name for r in self.routes]
        if not self.routes:
            raise ArtifactIntegrityError("manifest: no routes")
        for route in self.routes:
            _check_vision(route)
        if len(set(names)) != len(names):
            raise ArtifactIntegrityError(f"manifest: duplicate route names {names}")

    def _check_verbs(self) -> None:
        """Verbs name existing routes, a text route for texts and an image route for images; the
        default prompt is one of the prompts."""
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise ArtifactIntegrityError(f"manifest: default prompt {self.default_prompt_name!r} is not among the "
                                         "prompts")
        modality = {r.name: r.modality for r in self.routes}
        wrong = {verb: (spec.route, spec.image_route) for verb, spec in self.verbs.items()
                 if modality.get(spec.route) is not Modality.TEXT
                 or (spec.image_route is not None and modality.get(spec.image_route) is not Modality.IMAGE)}
        if not self.verbs or wrong:
            raise ArtifactIntegrityError(f"manifest: verbs {self.verbs} must name existing routes "
                                         f"{[r.name for r in self.routes]}, a text route for texts and an image "
                                         "route for images")

    def _check_kind(self) -> None:
        """What belongs to one chain kind only: image routes (which require pillow) to
        SentenceTransformer chains, MaxSim and scoring masks to multi-vector encoders, scoring to
        cross-encoders, sparse to sparse encoders."""
        if self.takes_images and (self.chain_kind is not ChainKind.SENTENCE_TRANSFORMER
                                  or "pillow" not in self.requires):
            raise ArtifactIntegrityError("manifest: routes that take images belong to SentenceTransformer chains and "
                                         "require pillow")
        multi_vector = self.chain_kind is ChainKind.MULTI_VECTOR_ENCODER
        if multi_vector != (self.similarity in (Similarity.MAXSIM, Similarity.MEAN_MAXSIM)):
            function = getattr(self.similarity, "value", None)
            raise ArtifactIntegrityError(f"manifest: similarity {function!r} for a {self.chain_kind.value}: MaxSim is "
                                         "for multi-vector encoders, and only for them")
        for verb, spec in self.verbs.items():
            mask = next((o for o in self.route(spec.route).outputs if o.name == spec.scoring_mask
                         and o.meaning is OutputMeaning.SCORING_MASK), None)
            if multi_vector != (spec.scoring_mask is not None) or (multi_vector and mask is None):
                raise ArtifactIntegrityError(f"manifest: verb {verb}: a scoring mask output of its route is required "
                                             "for multi-vector encoders and only for them")
        if (self.scoring is None) != (self.chain_kind is not ChainKind.CROSS_ENCODER):
            raise ArtifactIntegrityError("manifest: scoring is required for cross-encoders and only for them")
        if (self.sparse is None) != (self.chain_kind is not ChainKind.SPARSE_ENCODER):
            raise ArtifactIntegrityError("manifest: sparse is required for sparse encoders and only for them")

    def _check_requirements(self) -> None:
        """Only the extra packages this loader knows, and jinja2 wherever a route has a chat template."""
        unknown_requirements = set(self.requires) - set(EXTRA_REQUIREMENTS)
        if unknown_requirements:
            raise ArtifactIntegrityError(f"manifest: requires {sorted(unknown_requirements)}; this loader knows "
                                         f"{sorted(EXTRA_REQUIREMENTS)}")
        if any(r.chat is not None for r in self.routes) and "jinja2" not in self.requires:
            raise ArtifactIntegrityError("manifest: routes with a chat template require jinja2")

    def _check_embeddings(self) -> None:
        """A positive embedding dimension; int8 arithmetic only for int8 artifacts; ranges only for
        verbs, one per dimension."""
        if self.embedding_dimension is not None and not 1 <= self.embedding_dimension <= INT32_LIMIT:
            raise ArtifactIntegrityError(f"manifest: embedding_dimension must be positive, got "
                                         f"{self.embedding_dimension}")
        if self.int8_arithmetic is not None and self.precision is not Precision.INT8:
            raise ArtifactIntegrityError(f"manifest: int8_arithmetic belongs to int8 artifacts, not "
                                         f"{self.precision.value}")
        if self.int8_arithmetic is Int8Arithmetic.VNNI_OR_FLOAT_PRODUCTS:
            if self.format is not Format.OPENVINO:
                raise ArtifactIntegrityError(f"manifest: int8_arithmetic {self.int8_arithmetic.value} is OpenVINO's, "
                                             f"not {self.format.value}'s")
            if self.parity.status is not ParityStatus.PENDING and not any(
                    name.startswith(f"{FLOAT_PRODUCTS_RUN}.") for name in self.parity.metrics):
                raise ArtifactIntegrityError(f"manifest: int8_arithmetic {self.int8_arithmetic.value} without the "
                                             f"gate's {FLOAT_PRODUCTS_RUN} run: it was not gated both ways")
        if self.precision is Precision.BF16 and self.format is not Format.OPENVINO:
            raise ArtifactIntegrityError(f"manifest: bf16 artifacts are OpenVINO's, not {self.format.value}'s")
        wrong_ranges = [verb for verb, r in self.embedding_ranges.items()
                        if verb not in self.verbs or len(r.minimum) != self.embedding_dimension]
        if wrong_ranges:
            raise ArtifactIntegrityError(f"manifest: embedding ranges of {wrong_ranges} must belong to verbs and have "
                                         f"{self.embedding_dimension} dimensions")

    def _jsonable(self) -> dict[str, Any]:
        """The manifest as JSON values. Fields added within this schema version are marked
        OMIT_DEFAULT (left out while empty), so a manifest sealed before them keeps its digest."""
        data: dict[str, Any] = to_jsonable(self)
        return data

    @property
    def takes_images(self) -> bool:
        """Whether the verbs take images: through an image route (CLIP-style), or in the messages of
        a vision-language route."""
        return any(r.modality is Modality.IMAGE or r.vision is not None for r in self.routes)

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
        manifest: Manifest = from_jsonable(cls, data, "manifest")
        return manifest


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

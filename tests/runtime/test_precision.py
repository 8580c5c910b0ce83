"""Output precisions (float32, int8, uint8, binary, ubinary) against sentence-transformers' own
``quantize_embeddings`` and ``encode(precision=...)`` on real text, with the ranges the build
recorded from the reference's embeddings of the calibration texts."""

from __future__ import annotations

import numpy as np
import pytest

from packager.runtime import InvalidInputError, load
from packager.validators.texts import calibration_inputs, real_sentences

TEXTS = list(real_sentences()[-64:])


@pytest.fixture(scope="module")
def pair(tiny_chains, tiny_artifacts):
    """A tiny embedder that does not normalize, through its loader and in sentence-transformers."""
    from sentence_transformers import SentenceTransformer

    return load(tiny_artifacts["mean"]), SentenceTransformer(str(tiny_chains["mean"]), device="cpu")


def _close_codes(got: np.ndarray, want: np.ndarray) -> None:
    """The same codes, but for the rare value on a bucket's edge, where the two engines' last
    float bits (about 1e-7 apart) floor to neighbouring buckets."""
    assert got.dtype == want.dtype and got.shape == want.shape
    differ = got.astype(np.int16) != want.astype(np.int16)
    assert np.abs(got.astype(np.int16) - want.astype(np.int16)).max() <= 1
    assert differ.mean() < 1e-3, differ.mean()


def test_ranges_are_the_references_over_the_calibration_texts(pair):
    model, reference = pair
    recorded = model.manifest.embedding_ranges
    assert set(recorded) == {"encode", "encode_query", "encode_document"}
    calibration = reference.encode(calibration_inputs(pairs=False))
    np.testing.assert_allclose(recorded["encode"].minimum, calibration.min(axis=0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(recorded["encode"].maximum, calibration.max(axis=0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_scalar_precisions_match_quantize_embeddings_with_the_recorded_ranges(precision, pair):
    from sentence_transformers.util import quantize_embeddings

    model, reference = pair
    spec = model.manifest.embedding_ranges["encode"]
    ranges = np.array([spec.minimum, spec.maximum])
    want = quantize_embeddings(reference.encode(TEXTS), precision=precision, ranges=ranges)
    got = model.encode(TEXTS, precision=precision)
    _close_codes(got, want)
    assert len(np.unique(got)) > 64  # the buckets spread over the range, not pinned at its ends
    # one text alone gets the codes it gets in a batch (sentence-transformers' default ranges,
    # the batch's own, cannot quantize one text at all)
    np.testing.assert_array_equal(model.encode(TEXTS[5], precision=precision), got[5])
    # Matryoshka truncation first, as in sentence-transformers: the ranges are cut to match
    _close_codes(model.encode(TEXTS, precision=precision, truncate_dim=16),
                 quantize_embeddings(reference.encode(TEXTS)[:, :16], precision=precision, ranges=ranges[:, :16]))
    # the caller's own ranges replace the recorded ones
    own = ranges + np.array([[-1.0], [1.0]])  # wider by 1 each way
    _close_codes(model.encode(TEXTS, precision=precision, ranges=own.tolist()),
                 quantize_embeddings(reference.encode(TEXTS), precision=precision, ranges=own))


@pytest.mark.parametrize("precision", ["binary", "ubinary", "float32"])
def test_sign_precisions_match_sentence_transformers_encode(precision, pair):
    model, reference = pair
    for verb in ("encode", "encode_query"):
        got = getattr(model, verb)(TEXTS, precision=precision)
        want = getattr(reference, verb)(TEXTS, precision=precision)
        if precision == "float32":
            np.testing.assert_allclose(got, want, atol=3e-5)
        else:
            _close_codes(got, want)


def test_bad_precisions_and_ranges_are_refused(pair, tiny_artifacts):
    model, _ = pair
    with pytest.raises(InvalidInputError, match="precision must be one of"):
        model.encode(TEXTS[:2], precision="int4")
    with pytest.raises(InvalidInputError, match="ranges must be"):
        model.encode(TEXTS[:2], precision="int8", ranges=[[0.0, 1.0]])
    with pytest.raises(InvalidInputError, match="ranges must be"):
        model.encode(TEXTS[:2], precision="uint8", ranges=[["a"] * 2, ["b"] * 2])
    # the recorded ranges are of this model's raw outputs, not of normalized ones
    with pytest.raises(InvalidInputError, match="normalize_embeddings"):
        model.encode(TEXTS[:2], precision="int8", normalize_embeddings=True)
    # a text-and-image model's recorded ranges are of texts: its images need the caller's
    clip = load(tiny_artifacts["clip"])
    with pytest.raises(InvalidInputError, match="text-and-image"):
        clip.encode(TEXTS[:2], precision="uint8")
    normalizing = load(tiny_artifacts["mean-normalize"])
    assert normalizing.encode(TEXTS[:2], precision="int8", normalize_embeddings=True).dtype == np.int8
    assert model.encode([], precision="ubinary").shape == (0, model.get_sentence_embedding_dimension() // 8)


# Ranges that make no buckets: each is refused at call time, and the manifest refuses the same
# minima and maxima (one rule, ``manifest.ranges_problem``). Built per dimension ``d``.
BAD_BOUNDS = {
    "minimum above maximum": lambda d: ([0.5] * d, [-0.5] * d),
    "one dimension reversed": lambda d: ([-1.0] * d, [1.0] * (d - 1) + [-2.0]),
    "nan": lambda d: ([float("nan")] * d, [1.0] * d),
    "infinite maximum": lambda d: ([-1.0] * d, [float("inf")] * d),
    "infinite minimum": lambda d: ([float("-inf")] * d, [1.0] * d),
    "beyond float32": lambda d: ([-1.0] * d, [1e39] * d),
    "span beyond float32": lambda d: ([-3e38] * d, [3e38] * d),
}
BAD_SHAPES = {
    "one row": lambda d: [[0.0] * d],
    "three rows": lambda d: [[0.0] * d] * 3,
    "too few dimensions": lambda d: [[0.0] * (d - 1), [1.0] * (d - 1)],
    "too many dimensions": lambda d: [[0.0] * (d + 1), [1.0] * (d + 1)],
    "flat": lambda d: [0.0, 1.0],
    "ragged": lambda d: [[0.0] * d, [1.0] * (d - 1)],
    "strings": lambda d: [["a"] * d, ["b"] * d],
    "booleans": lambda d: [[False] * d, [True] * d],
    "complex": lambda d: [[0j] * d, [1j] * d],
    "none inside": lambda d: [[None] * d, [1.0] * d],
    "a dict": lambda d: {"min": [0.0] * d, "max": [1.0] * d},
    "a scalar": lambda d: 1.0,
    "empty": lambda d: [],
}


@pytest.mark.parametrize("precision", ["int8", "uint8"])
@pytest.mark.parametrize("bad", [*BAD_BOUNDS, *BAD_SHAPES])
def test_call_time_ranges_that_make_no_buckets_are_refused(bad, precision, pair):
    model, _ = pair
    dimension = model.get_sentence_embedding_dimension()
    ranges = list(BAD_BOUNDS[bad](dimension)) if bad in BAD_BOUNDS else BAD_SHAPES[bad](dimension)
    with pytest.raises(InvalidInputError, match="ranges"):
        model.encode(TEXTS[:2], precision=precision, ranges=ranges)
    with pytest.raises(InvalidInputError, match="ranges"):  # a numpy array too, and on every verb
        model.encode_query(TEXTS[:2], precision=precision, ranges=np.array(ranges, dtype=object)
                           if bad in BAD_SHAPES else np.array(ranges))
    # equal bounds are a range (every value in one bucket), as the manifest allows
    assert model.encode(TEXTS[:2], precision=precision, ranges=[[0.0] * dimension] * 2).shape == (2, dimension)


@pytest.mark.parametrize("bad", BAD_BOUNDS)
def test_the_manifest_refuses_the_ranges_the_call_refuses(bad):
    from packager.runtime.errors import ArtifactIntegrityError
    from packager.runtime.manifest import EmbeddingRanges

    minimum, maximum = BAD_BOUNDS[bad](4)
    with pytest.raises(ArtifactIntegrityError, match="embedding ranges"):
        EmbeddingRanges(minimum=tuple(minimum), maximum=tuple(maximum))
    assert EmbeddingRanges(minimum=(-1.0,) * 4, maximum=(1.0,) * 4).minimum == (-1.0,) * 4


@pytest.fixture(scope="module")
def multi_vector(tiny_chains, tiny_artifacts):
    """A tiny multi-vector encoder whose queries and documents differ (prompts, [MASK] expansion)."""
    from sentence_transformers import MultiVectorEncoder

    return load(tiny_artifacts["mv-expansion"]), MultiVectorEncoder(str(tiny_chains["mv-expansion"]), device="cpu")


@pytest.mark.parametrize("verb", ["encode_query", "encode_document"])
def test_multi_vector_tokens_are_quantized_as_sentence_embeddings_are(verb, multi_vector):
    """Each token vector, as ``quantize_embeddings`` quantizes one embedding, with the verb's own
    ranges over every token the reference keeps of the calibration texts."""
    from sentence_transformers.util import quantize_embeddings

    model, reference = multi_vector
    calibration = np.concatenate(getattr(reference, verb)(calibration_inputs(pairs=False), convert_to_numpy=True))
    spec = model.manifest.embedding_ranges[verb]
    np.testing.assert_allclose(spec.minimum, calibration.min(axis=0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(spec.maximum, calibration.max(axis=0), rtol=0, atol=1e-6)
    want_rows = getattr(reference, verb)(TEXTS, convert_to_numpy=True)
    for precision in ("int8", "uint8", "binary", "ubinary"):
        got = getattr(model, verb)(TEXTS, precision=precision)
        assert [len(g) for g in got] == [len(w) for w in want_rows]  # the same tokens, text by text
        ranges = np.array([spec.minimum, spec.maximum]) if precision.endswith("int8") else None
        _close_codes(np.concatenate(got), quantize_embeddings(np.concatenate(want_rows), precision=precision,
                                                              ranges=ranges))
        np.testing.assert_array_equal(getattr(model, verb)(TEXTS[3], precision=precision), got[3])


def test_multi_vector_precisions_keep_each_verbs_ranges_and_refuse_what_they_do_not_describe(multi_vector,
                                                                                              tiny_artifacts):
    model, _ = multi_vector
    recorded = model.manifest.embedding_ranges
    assert set(recorded) == {"encode", "encode_query", "encode_document"}
    # queries carry their prompt and [MASK] expansion tokens: their ranges are their own
    assert recorded["encode_query"] != recorded["encode_document"]
    with pytest.raises(InvalidInputError, match="normalize_embeddings"):  # this chain does not normalize
        model.encode_query(TEXTS[:2], precision="int8", normalize_embeddings=True)
    with pytest.raises(InvalidInputError, match="precision must be one of"):
        model.encode_document(TEXTS[:2], precision="fp8")
    with pytest.raises(InvalidInputError, match="ranges must be"):
        model.encode_document([], precision="uint8", ranges=[[0.0], [1.0]])
    assert model.encode_document([], precision="binary") == []
    normalizing = load(tiny_artifacts["mv-normalize"])
    codes = normalizing.encode_query(TEXTS[:2], precision="int8", normalize_embeddings=True)
    assert [c.dtype for c in codes] == [np.int8, np.int8]


@pytest.mark.parametrize("bad", ["minimum above maximum", "nan", "span beyond float32"])
def test_a_multi_vector_encoders_call_time_ranges_are_checked_by_the_same_rule(bad, multi_vector):
    model, _ = multi_vector
    dimension = model.encode_document(TEXTS[:1])[0].shape[-1]
    with pytest.raises(InvalidInputError, match="ranges: dimension 0"):
        model.encode_document(TEXTS[:2], precision="int8", ranges=list(BAD_BOUNDS[bad](dimension)))

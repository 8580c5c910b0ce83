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

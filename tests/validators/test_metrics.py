"""Metrics are pure numpy functions: check them on hand-computable inputs."""

from __future__ import annotations

import numpy as np
import pytest

from packager.validators.metrics import max_abs_diff, neighbour_agreement, row_cosine


def test_row_cosine():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0], [0.0, 0.0], [1.0, 0.0], [4.0, 3.0]])
    np.testing.assert_allclose(row_cosine(a, b), [1.0, -1.0, 1.0, 0.0, 24 / 25])


def test_row_cosine_propagates_nan():
    assert np.isnan(row_cosine(np.array([[np.nan, 1.0]]), np.array([[1.0, 1.0]]))[0])


def test_max_abs_diff():
    assert max_abs_diff(np.array([[1.0, 2.0]]), np.array([[1.5, 1.0]])) == 1.0
    assert max_abs_diff(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0


def test_neighbour_agreement_detects_a_swapped_neighbour():
    reference = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert neighbour_agreement(reference, reference) == 1.0
    candidate = reference.copy()
    candidate[0] = [0.0, 0.9, 0.1]  # text 0 moves next to text 2, away from text 1
    # Text 0 now finds text 2, text 1 finds text 2 and text 2 finds text 0: three misses. Text 3
    # is orthogonal to all, so any neighbour is a tie and counts.
    assert neighbour_agreement(reference, candidate) == pytest.approx(0.25)


def test_neighbour_agreement_tolerates_ties():
    # Texts 1 and 2 embed identically (e.g. truncated to the same tokens): either is text 0's neighbour.
    reference = np.array([[1.0, 0.0], [0.8, 0.6], [0.8, 0.6], [0.0, 1.0]])
    candidate = reference + np.array([[0.0, 0.0], [0.0, 1e-9], [0.0, -1e-9], [0.0, 0.0]])
    assert neighbour_agreement(reference, candidate) == 1.0


def test_neighbour_agreement_top_k():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(30, 8))
    assert neighbour_agreement(reference, reference, k=5) == 1.0
    assert neighbour_agreement(reference, rng.normal(size=(30, 8)), k=5) < 0.5


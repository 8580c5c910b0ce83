"""The parity report: joining a second run of the same inputs."""

from __future__ import annotations

import dataclasses

import pytest

from packager.validators.report import Check, ParityReport


def test_a_second_run_joins_the_report_and_fails_it_where_it_fails():
    first = ParityReport(inputs=2, inputs_sha256="a", metrics={"encode.min_cosine": 0.999},
                         checks=(Check("encode.min_cosine", 0.999, 0.98),))
    second = dataclasses.replace(first, metrics={"encode.min_cosine": 0.97},
                                 checks=(Check("encode.min_cosine", 0.97, 0.98),), problems=("a NaN",))
    joined = first.with_run(second, "float_products")
    assert joined.metrics == {"encode.min_cosine": 0.999, "float_products.encode.min_cosine": 0.97}
    assert not joined.passed and joined.failures == ["float_products: a NaN",
                                                     "float_products.encode.min_cosine = 0.97 (needs >= 0.98)"]
    assert first.with_run(first, "float_products").passed
    worst = dataclasses.replace(second, worst=({"verb": "encode", "cosine": 0.97}, {"cosine": 0.5}))
    assert [w["verb"] for w in first.with_run(worst, "float_products").worst] == ["float_products.encode",
                                                                                 "float_products"]
    with pytest.raises(ValueError, match="different inputs"):
        first.with_run(dataclasses.replace(first, inputs_sha256="b"), "float_products")

"""Batch embedding with Spark: ``mlflow.pyfunc.spark_udf`` over a registered version of each chain
kind (``env_manager="local"``), PySpark in local mode on two cores, a few thousand real texts (a
thousand pairs for the cross-encoder) in six partitions, row by row against the loader."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from conftest import sparse_rows
from packager.registry.mlflow_store import MlflowStore
from packager.runtime import load
from packager.validators.texts import real_sentences

pytestmark = pytest.mark.slow

TEXTS = [*real_sentences(), *(s.upper() for s in real_sentences())]  # 3390 texts
PAIRS = list(zip(TEXTS[0:2000:2], TEXTS[1:2000:2], strict=True))
PARTITIONS = 6
# Spark's type for each kind's rows, as a user writes it for spark_udf's result_type.
RESULT_TYPES = {"mean": "array<float>", "ce-sigmoid": "float",
                "splade-max": "struct<indices:array<bigint>,values:array<float>>",
                "mv-skiplist": "array<array<float>>"}


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable  # the workers run this environment's Python
    session = (SparkSession.builder.master("local[2]").appName("packager-tests")
               .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
    yield session
    session.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return MlflowStore(f"sqlite:///{tmp_path_factory.mktemp('spark-registry') / 'mlflow.db'}")


def _udf(spark, store, monkeypatch, artifact, name: str, result_type: str, **params):
    import mlflow

    registered = store.register(artifact, name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
    return mlflow.pyfunc.spark_udf(spark, registered.model_uri, result_type=result_type, env_manager="local",
                                   params=params or None)


def _collect(frame, column) -> list:
    """``column`` of every row, in ``id`` order (partitions come back in any order)."""
    return [row.out for row in sorted(frame.select("id", column.alias("out")).collect(), key=lambda row: row.id)]


@pytest.mark.parametrize("name", sorted(RESULT_TYPES))
def test_spark_udf_gives_the_loaders_numbers_row_by_row(name, spark, store, tiny_artifacts, monkeypatch):
    import pandas as pd

    artifact = tiny_artifacts[name]
    model = load(artifact)
    udf = _udf(spark, store, monkeypatch, artifact, name, RESULT_TYPES[name])
    if name.startswith("ce-"):
        frame = spark.createDataFrame(pd.DataFrame({"id": range(len(PAIRS)), "query": [q for q, _ in PAIRS],
                                                    "document": [d for _, d in PAIRS]})).repartition(PARTITIONS)
        assert frame.rdd.getNumPartitions() == PARTITIONS
        np.testing.assert_allclose(_collect(frame, udf("query", "document")), model.predict(PAIRS), atol=1e-5)
        return
    frame = spark.createDataFrame(pd.DataFrame({"id": range(len(TEXTS)), "text": TEXTS})).repartition(PARTITIONS)
    got, want = _collect(frame, udf("text")), model.encode(TEXTS)
    if name.startswith("mv-"):  # one [tokens, dim] array per text
        assert [np.asarray(g).shape for g in got] == [w.shape for w in want]
        got, want = np.concatenate(got), np.concatenate(want)
    elif name.startswith("splade"):  # a struct of indices and values per text
        got, want = sparse_rows(((row.indices, row["values"]) for row in got), want.dimension), want.toarray()
    np.testing.assert_allclose(np.asarray(got, dtype=np.float32), want, atol=1e-5)


@pytest.mark.parametrize(("name", "precision"), [("mean", "int8"), ("mean", "ubinary"), ("mv-skiplist", "int8")])
def test_spark_udf_takes_the_output_precision(name, precision, spark, store, tiny_artifacts, monkeypatch):
    import pandas as pd

    artifact = tiny_artifacts[name]
    result_type = "array<array<int>>" if name.startswith("mv-") else "array<int>"
    udf = _udf(spark, store, monkeypatch, artifact, name, result_type, verb="encode_query", precision=precision)
    frame = spark.createDataFrame(pd.DataFrame({"id": range(400), "text": TEXTS[:400]})).repartition(3)
    got, want = _collect(frame, udf("text")), load(artifact).encode_query(TEXTS[:400], precision=precision)
    if name.startswith("mv-"):  # one [tokens, dim] array of codes per text
        assert [np.asarray(g).shape for g in got] == [w.shape for w in want]
        got, want = np.concatenate(got), np.concatenate(want)
    np.testing.assert_array_equal(np.asarray(got), want.astype(np.int32))


def test_spark_udf_embeds_a_clip_models_texts_and_image_files(spark, store, tiny_artifacts, monkeypatch):
    """A CLIP-style model over a struct of a text column and an image column of file bytes (what
    ``spark.read.format("binaryFile")`` gives as ``content``), one of them set per row."""
    import pandas as pd
    from pyspark.sql import functions

    from packager.validators.image_samples import real_image_files

    files = [path.read_bytes() for path in real_image_files()]
    items = [files[i % len(files)] if i % 5 == 0 else TEXTS[i] for i in range(300)]  # every fifth row an image
    artifact = tiny_artifacts["clip"]
    udf = _udf(spark, store, monkeypatch, artifact, "clip", "array<float>")
    frame = spark.createDataFrame(pd.DataFrame({
        "id": range(len(items)), "text": [None if isinstance(i, bytes) else i for i in items],
        "image": [i if isinstance(i, bytes) else None for i in items]})).repartition(3)
    got = _collect(frame, udf(functions.struct("text", "image")))
    np.testing.assert_allclose(np.asarray(got, dtype=np.float32), load(artifact).encode(items), atol=1e-5)

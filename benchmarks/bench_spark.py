"""Batch embedding with Spark against the loader alone: rows/s of ``mlflow.pyfunc.spark_udf`` over
a registered version (``env_manager="local"``, PySpark local mode with 1 and with 2 cores, the
rows in 8 partitions, written to Spark's ``noop`` sink), once the workers are warm (the job run
once before the timed runs; the median of 3), beside the loader alone on the same texts (batch
32, 1 and 2 threads). The target: Spark at least 70 % of the loader's rows/s per core. With two
cores it also times the same job at each of ``--arrow-batches`` rows per Arrow batch
(``spark.sql.execution.arrow.maxRecordsPerBatch``; Spark's default, 10000, gives each partition
one batch here): each batch is one call of the pyfunc.

    .venv/bin/python benchmarks/bench_spark.py [ARTIFACT] [--rows N] [--arrow-batches 32,128] [--out FILE]

ARTIFACT defaults to all-MiniLM-L6-v2's ONNX fp32 build in dist/bench-speed/minilm (built there if
missing); it is registered in a throwaway SQLite registry.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import minilm
from models import ROOT
from results import print_table, save

from packager.runtime import load
from packager.validators.texts import real_sentences

PARTITIONS, ROUNDS = 8, 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", nargs="?", type=Path)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--arrow-batches", type=lambda v: [int(n) for n in v.split(",")], default=[32, 128])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "spark.json")
    args = parser.parse_args()
    artifact = args.artifact or minilm()
    sentences = list(real_sentences())
    texts = [sentences[i % len(sentences)] for i in range(args.rows)]
    results: dict = {"artifact": artifact.name, "rows": len(texts), "partitions": PARTITIONS}
    for threads in (1, 2):
        model = load(artifact, threads=threads)
        model.encode(texts[:64])
        results[f"loader, {threads} thread(s)"] = _median(partial(model.encode, texts, batch_size=32), len(texts))
    from packager.registry.mlflow_store import MlflowStore

    with tempfile.TemporaryDirectory(prefix="bench-spark-") as scratch:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch}/mlflow.db"
        uri = MlflowStore(os.environ["MLFLOW_TRACKING_URI"]).register(artifact, "batch").model_uri
        for cores in (1, 2):
            results.update(_spark(uri, texts, cores, args.arrow_batches if cores == 2 else []))
    per_core = results["loader, 1 thread(s)"]["rows_per_s"]
    for name, row in results.items():
        if name.startswith("spark_udf"):
            row["of_loader_per_core"] = round(row["rows_per_s"] / ((2 if "local[2]" in name else 1) * per_core), 3)
    save(results, args.out)
    print_table(results, "run", {"rows/s": lambda row: f"{row['rows_per_s']:.1f}",
                                 "of the loader's rows/s per core": lambda row: str(row.get("of_loader_per_core", ""))})


def _spark(uri: str, texts: list[str], cores: int, arrow_batches: list[int]) -> dict:
    """``spark_udf, local[cores]`` at Spark's default Arrow batch size, then at each of
    ``arrow_batches``."""
    import mlflow
    import pandas as pd
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (SparkSession.builder.master(f"local[{cores}]").appName("bench-spark")
             .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
    try:
        udf = mlflow.pyfunc.spark_udf(spark, uri, result_type="array<float>", env_manager="local")
        frame = spark.createDataFrame(pd.DataFrame({"text": texts})).repartition(PARTITIONS).cache()
        frame.count()
        job = frame.select(udf("text").alias("embedding"))

        def run() -> None:
            job.write.format("noop").mode("overwrite").save()

        started = time.perf_counter()
        run()  # the first run: workers start, models load
        first = time.perf_counter() - started
        rows = {f"spark_udf, local[{cores}]": {**_median(run, len(texts)), "first_run_s": round(first, 1)}}
        for size in arrow_batches:
            spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(size))
            rows[f"spark_udf, local[{cores}], Arrow batches of {size}"] = _median(run, len(texts))
        return rows
    finally:
        spark.stop()


def _median(run, count: int) -> dict:
    seconds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return {"rows_per_s": round(count / statistics.median(seconds), 1), "seconds": [round(s, 2) for s in seconds]}


if __name__ == "__main__":
    main()

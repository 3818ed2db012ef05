"""Score (Spark): rows in the original schema -> each row with its anomaly score.

Rows are read with the model's own schema and encoded with its own transform spec. A row that
cannot be parsed or encoded (wrong field count, not a number, unseen category) is written with
a ``reason`` and a null score instead of failing the job: rows in == rows scored + rows rejected.
"""

from __future__ import annotations

import time
from pathlib import Path

from gen_pipeline.bundle import ModelBundle
from gen_pipeline.errors import PipelineError
from gen_pipeline.generate import Progress, broadcast_bundle, bundle_on_worker
from gen_pipeline.preprocess import read_raw_lines
from gen_pipeline.schema import REASON
from gen_pipeline.storage import commit, staging_dir, write_json


def run_score(spark, bundle: ModelBundle, *, inputs: list[Path], out: Path, lineage: dict) -> dict:
    from pyspark.sql import functions as F

    if bundle.config.model.family != "tvae":
        raise PipelineError(f"model family {bundle.config.model.family!r} has no anomaly score; "
                            "score with a VAE (model.family=tvae)")
    schema = bundle.schema
    parsed, _ = read_raw_lines(spark, inputs, schema)
    bc, key = broadcast_bundle(spark, bundle)
    out_ddl = f"source string, line bigint, {schema.spark_ddl()}, score double, reason string"

    def score(batches):
        b = bundle_on_worker(bc, key)
        for pdf in batches:
            good = pdf[REASON].isna().to_numpy()
            scores = [None] * len(pdf)
            reasons = pdf[REASON].tolist()
            if good.any():
                s, r = b.score(pdf.loc[good, schema.names].reset_index(drop=True))
                for i, si, ri in zip(good.nonzero()[0], s, r):
                    scores[i], reasons[i] = (None if ri else float(si)), ri
            yield pdf[["source", "line", *schema.names]].assign(score=scores, reason=reasons)

    stage = staging_dir(out)
    t0 = time.perf_counter()
    scored = parsed.mapInPandas(score, out_ddl)
    tasks = scored.rdd.getNumPartitions()
    with Progress(spark, "score", 0, tasks):
        scored.write.mode("overwrite").parquet(str(stage))
    counts = spark.read.parquet(str(stage)).agg(
        F.count(F.lit(1)).alias("rows"), F.count("score").alias("scored"),
        F.expr("percentile_approx(score, array(0.5, 0.99))").alias("q")).first()
    rows_in, scored_n = int(counts["rows"]), int(counts["scored"])
    aucs = {}
    for label in schema.label_columns:  # rank quality of the score against known labels, in Spark
        from pyspark.ml.evaluation import BinaryClassificationEvaluator

        labelled = spark.read.parquet(str(stage)).where(F.col("score").isNotNull() & F.col(label).isNotNull()) \
            .select(F.col("score"), F.col(label).cast("double").alias("label"))
        aucs[f"roc_auc_{label}"] = BinaryClassificationEvaluator(
            rawPredictionCol="score", labelCol="label", metricName="areaUnderROC").evaluate(labelled)
    lineage = {**lineage, "inputs": [str(p) for p in inputs], "rows_in": rows_in, "rows_scored": scored_n,
               "rows_rejected": rows_in - scored_n, "score": "negative ELBO (nats per row)",
               "score_median": counts["q"][0] if counts["q"] else None,
               "score_p99": counts["q"][1] if counts["q"] else None,
               **aucs, "seconds": round(time.perf_counter() - t0, 2)}
    write_json(stage / "_lineage.json", lineage)
    commit(stage, out)
    print(f"[score] rows in={rows_in:,} scored={scored_n:,} rejected={rows_in - scored_n:,} "
          f"median score={lineage['score_median']} "
          + "".join(f"{k}={v:.4f} " for k, v in aucs.items()) + f"-> {out}", flush=True)
    return lineage

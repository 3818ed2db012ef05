"""Score (Spark): rows in the original schema -> each row with its anomaly score.

Rows are read with the model's own schema and encoded with its own transform spec. A row that
cannot be parsed or encoded (wrong field count, not a number, unseen category) is written with
a ``reason`` and a null score instead of failing the job: rows in == rows scored + rows rejected.

One Arrow pass does the work: each task parses its lines and scores them in the same Python
worker (no second trip through the JVM), and the summary (counts, quantiles, ROC-AUC against
label columns) is one aggregation over the written score and label columns.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from gen_pipeline.bundle import ModelBundle
from gen_pipeline.errors import PipelineError
from gen_pipeline.generate import Progress, broadcast_bundle, bundle_on_worker
from gen_pipeline.preprocess import data_lines
from gen_pipeline.schema import REASON, TableSchema, parse_table
from gen_pipeline.storage import commit, staging_dir, write_json

# ROC-AUC is computed from a histogram of asinh(score) with this many bins per unit: scores in
# one bin count as ties, i.e. a relative resolution of about 0.05% for |score| > 1. On Shuttle's
# 1M rows that moves the AUC by less than 1e-5 from the exact (sorted) value.
AUC_BINS_PER_UNIT = 2000


def score_table(bundle: ModelBundle, parsed, schema: TableSchema):
    """Parsed lines (``parse_table``'s output) -> source, line, the columns, score, reason."""
    import pyarrow as pa

    reasons = np.asarray(parsed.column(REASON).to_pylist(), dtype=object)
    good = np.equal(reasons, None)
    scores = np.full(len(reasons), np.nan)
    if good.any():
        rows = parsed.filter(pa.array(good)).select(schema.names).to_pandas()
        s, r = bundle.score(rows)
        where = np.flatnonzero(good)
        scores[where] = s
        reasons[where] = r
    out = parsed.select(["source", "line", *schema.names])
    out = out.append_column("score", pa.array(scores, type=pa.float64(), mask=np.isnan(scores)))
    return out.append_column("reason", pa.array(reasons.tolist(), type=pa.string()))


def auc_from_histogram(bins: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> float:
    """ROC-AUC (Mann-Whitney: P(positive scores above negative), ties half) from per-bin counts."""
    order = np.argsort(bins)
    pos, neg = positives[order].astype(np.float64), negatives[order].astype(np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))


def summarise(spark, path: Path, labels: list[str]) -> dict:
    """Counts, score quantiles and ROC-AUC per binary label column, reading only those columns."""
    from pyspark.sql import functions as F

    df = spark.read.parquet(str(path)).select("score", *labels)
    first = df.agg(F.count(F.lit(1)).alias("rows"), F.count("score").alias("scored"),
                   F.expr("percentile_approx(score, array(0.5, 0.99), 10000)").alias("q")).first()
    out = {"rows": int(first["rows"]), "scored": int(first["scored"]), "q": first["q"], "aucs": {}}
    for label in labels:  # rank quality of the score against a known 0/1 label
        y = F.col(label).cast("double")
        hist = (df.where(F.col("score").isNotNull() & y.isin(0.0, 1.0))
                .groupBy(F.floor(F.asinh("score") * AUC_BINS_PER_UNIT).alias("bin"))
                .agg(F.sum((y == 1.0).cast("long")).alias("pos"), F.sum((y == 0.0).cast("long")).alias("neg"))
                .collect())  # at most a few thousand bins per unit of asinh(score): bounded
        if hist:
            b, p, n = (np.array([r[k] for r in hist]) for k in ("bin", "pos", "neg"))
            out["aucs"][f"roc_auc_{label}"] = auc_from_histogram(b, p, n)
    return out


def run_score(spark, bundle: ModelBundle, *, inputs: list[Path], out: Path, lineage: dict) -> dict:
    if bundle.config.model.family != "tvae":
        raise PipelineError(f"model family {bundle.config.model.family!r} has no anomaly score; "
                            "score with a VAE (model.family=tvae)")
    schema = bundle.schema
    lines = data_lines(spark, inputs, schema)
    bc, key = broadcast_bundle(spark, bundle)
    out_ddl = f"source string, line bigint, {schema.spark_ddl()}, score double, reason string"

    def score(batches):
        import pyarrow as pa

        b = bundle_on_worker(bc, key)
        for rb in batches:
            yield from score_table(b, parse_table(pa.Table.from_batches([rb]), schema), schema).to_batches()

    stage = staging_dir(out)
    t0 = time.perf_counter()
    scored = lines.mapInArrow(score, out_ddl)
    with Progress(spark, "score", 0, scored.rdd.getNumPartitions()):
        scored.write.mode("overwrite").parquet(str(stage))
    summary = summarise(spark, stage, schema.label_columns)
    rows_in, scored_n, q = summary["rows"], summary["scored"], summary["q"]
    lineage = {**lineage, "inputs": [str(p) for p in inputs], "rows_in": rows_in, "rows_scored": scored_n,
               "rows_rejected": rows_in - scored_n, "score": "negative ELBO (nats per row)",
               "score_median": q[0] if q else None, "score_p99": q[1] if q else None,
               **summary["aucs"], "seconds": round(time.perf_counter() - t0, 2)}
    write_json(stage / "_lineage.json", lineage)
    commit(stage, out)
    print(f"[score] rows in={rows_in:,} scored={scored_n:,} rejected={rows_in - scored_n:,} "
          f"median score={lineage['score_median']} "
          + "".join(f"{k}={v:.4f} " for k, v in summary["aucs"].items()) + f"-> {out}", flush=True)
    return lineage

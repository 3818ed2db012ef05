"""score (Spark), one job for every kind: the kind's raw records, each scored by the model in the
task that reads it and written as that task's Parquet part, with a small summary per task
(counts, score histograms per 0/1 label) merged on the driver into row counts, quantiles and
ROC-AUC: no second pass over the output. Records that cannot be scored get a ``reason`` and a
null score: rows in == rows scored + rows rejected."""

from __future__ import annotations

import time
from pathlib import Path

from gen_pipeline.errors import PipelineError
from gen_pipeline.layout import LINEAGE_FILE
from gen_pipeline.scores import ScoreSummary
from gen_pipeline.stages.sparkkit import Progress, broadcast_bundle, bundle_on_worker, parts_complete, write_part
from gen_pipeline.storage import commit, staging_dir, write_json


def run_score(spark, bundle, job, *, out: Path, lineage: dict) -> dict:
    """Score ``job.frame`` with ``bundle`` into ``out``; returns the lineage."""
    from gen_pipeline.bundle import scoring_families

    if not bundle.family.can_score:
        raise PipelineError(f"model family {bundle.family.name!r} has no anomaly score; score with a family "
                            f"that has one ({', '.join(scoring_families(bundle.kind.name))})")
    t0 = time.perf_counter()  # the job's time: from reading the input to the commit
    bc, key = broadcast_bundle(spark, bundle)
    stage = staging_dir(out)
    stage.mkdir(parents=True)
    labels, columns, scorer = job.labels, job.columns, job.scorer

    def score(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        b = bundle_on_worker(bc, key)
        summaries = [ScoreSummary(labels, c) for c in columns]

        def tables():
            for rb in batches:
                table = scorer(b, rb)
                for s in summaries:
                    s.add(table)
                yield table

        write_part(tables(), stage, TaskContext.get().partitionId())
        yield pa.RecordBatch.from_pydict({c: [s.to_json()] for c, s in zip(columns, summaries)})

    scored = job.frame.mapInArrow(score, ", ".join(f"`{c}` string" for c in columns))
    with Progress(spark, "score", 0, scored.rdd.getNumPartitions()):
        parts = scored.collect()  # one small row per task
    parts_complete(stage)
    summaries = {c: ScoreSummary.merge([r[c] for r in parts], labels, c) for c in columns}
    main = summaries[columns[0]]
    rows_in, scored_n, q = main.rows, main.scored, main.quantiles((0.5, 0.99))
    aucs = {k: v for s in summaries.values() for k, v in s.roc_aucs().items()}
    if scored_n == 0:  # a job that scored nothing fails, saying why (e.g. a column missing from the file)
        import pyarrow.dataset as ds

        why = ds.dataset(stage, format="parquet").head(1, columns=["reason"]).column(0).to_pylist() if rows_in else []
        raise PipelineError(f"{', '.join(map(str, job.inputs))}: none of the {rows_in:,} records could be scored"
                            + (f"; the first: {why[0]}" if why and why[0] else "")
                            + "; check the input's columns against the model's schema")
    lineage = {**lineage, **job.lineage, "inputs": job.inputs, "rows_in": rows_in, "rows_scored": scored_n,
               "rows_rejected": rows_in - scored_n, "score": job.meaning,
               "score_median": q[0] if q else None, "score_p99": q[1] if q else None,
               **aucs, "seconds": round(time.perf_counter() - t0, 2)}
    write_json(stage / LINEAGE_FILE, lineage)
    commit(stage, out)
    bc.unpersist()
    print(f"[score] rows in={rows_in:,} scored={scored_n:,} rejected={rows_in - scored_n:,} "
          f"median score={lineage['score_median']} "
          + "".join(f"{k}={v:.4f} " for k, v in aucs.items()) + f"-> {out}", flush=True)
    return lineage


def stage_score(cfg, rt, model: str | None = None, inputs: list[str] | None = None,
                out: str | None = None) -> dict:
    """Score ``inputs`` (default: the dataset's held-out records: a bundled table's test file, a
    user table's held-out test split from its preprocess output) with a registered model."""
    from gen_pipeline.layout import RunLayout
    from gen_pipeline.registry import resolve

    spark = rt.spark_started()  # the JVM starts while the model loads
    rt.mlflow(cfg.name)
    uri = model or f"models:/{cfg.model_name}@champion"
    mv, pyfunc = resolve(uri)
    bundle = pyfunc.bundle
    session = spark()
    job = bundle.kind.score_records(session, cfg, rt.datasets_dir, inputs, bundle, work_dir=rt.work_dir)
    out_path = Path(out) if out else RunLayout(rt.work_dir, cfg.name).output("scored")
    lineage = {"model_uri": uri, "model_name": mv.name, "model_version": mv.version, "run_id": mv.run_id}
    lineage = run_score(session, bundle, job, out=out_path, lineage=lineage)
    return {"scored": str(out_path), "rows_in": lineage["rows_in"], "rows_scored": lineage["rows_scored"],
            **{k: v for k, v in lineage.items() if k.startswith("roc_auc_")}}

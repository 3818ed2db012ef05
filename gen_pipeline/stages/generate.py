"""Generate (Spark): N rows from a registered model, spread over partitions, in the ORIGINAL schema.

Each task rebuilds the model once per Python worker from a broadcast bundle (no MLflow access
needed on executors), seeds from (run seed, partition index) so a retried task or a rerun gives
the same rows, decodes to the original types as Arrow tables and writes its own Parquet file
``part-<partition>.parquet`` with pyarrow, straight from those tables: no trip of every row
through the JVM's row-based Parquet writer, which cost about as much as sampling itself. A
file appears under its final name only when complete (written beside it, then renamed), so a
retried or speculative attempt replaces it with identical bytes. Tasks return one small row
each; the driver writes ``_SUCCESS`` and ``_lineage.json`` and commits the folder atomically.
The output path must be a filesystem the executors and the driver share (as for the commit).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from gen_pipeline.bundle import ModelBundle, partition_seed
from gen_pipeline.errors import PipelineError
from gen_pipeline.layout import LINEAGE_FILE
from gen_pipeline.stages.sparkkit import (Progress, _fault_injection, broadcast_bundle, bundle_on_worker,
                                          parts_complete, rows_per_partition, write_part)
from gen_pipeline.storage import commit, staging_dir, write_json

def run_generate(spark, bundle: ModelBundle, *, rows: int, seed: int, out: Path, lineage: dict,
                 partition_rows: int = 250_000, conditions: dict[str, str] | None = None) -> dict:
    """Write ``rows`` synthetic rows to ``out`` (Parquet, original schema); returns the lineage.

    ``conditions`` ({column: value}) keeps only rows with those categorical values."""
    t0 = time.perf_counter()  # the job's time: from shipping the model to the commit
    out = Path(out)
    bundle.conditions(conditions)  # a bad column or value fails here, on the driver
    partitions = max(spark.sparkContext.defaultParallelism, -(-rows // partition_rows))
    partitions = min(partitions, rows)
    bc, key = broadcast_bundle(spark, bundle)
    schema = bundle.schema
    fault = _fault_injection()

    stage = staging_dir(out)
    stage.mkdir(parents=True)

    def generate(batches):
        import pyarrow as pa

        b = bundle_on_worker(bc, key)
        for rb in batches:
            for p in rb.column(0).to_pylist():
                if fault and fault[0] == p and not os.path.exists(fault[1]):
                    open(fault[1], "w").close()
                    raise RuntimeError(f"injected fault in partition {p} (GEN_PIPELINE_FAULT_GENERATE)")
                n = rows_per_partition(rows, partitions, p)
                first = sum(rows_per_partition(rows, partitions, q) for q in range(p))  # job-wide index of its row 0
                written, size = write_part(b.sample_arrow(n, partition_seed(seed, p), conditions=conditions,
                                                          dictionary=True, row_offset=first),
                                           stage, p, string_statistics=False)
                yield pa.RecordBatch.from_pydict({"partition": [p], "rows": [written], "bytes": [size]})

    ids = spark.range(0, partitions, 1, numPartitions=partitions)
    parts = ids.mapInArrow(generate, "partition long, rows long, bytes long")
    given = f", conditions={conditions}" if conditions else ""
    print(f"[generate] {rows:,} rows over {partitions} partitions, seed={seed}{given} -> {out}", flush=True)
    with Progress(spark, "generate", rows, partitions):
        done = parts.collect()  # one small row per partition
    written = sum(r["rows"] for r in done)
    if written != rows or len(done) != partitions:
        raise PipelineError(f"generate wrote {written:,} rows in {len(done)} parts; expected {rows:,} in {partitions}")
    parts_complete(stage)
    seconds = time.perf_counter() - t0
    lineage = {**lineage, "rows": rows, "seed": seed, "conditions": conditions or {}, "partitions": partitions,
               "columns": [c.name for c in schema.model_columns],
               "bytes": sum(r["bytes"] for r in done),
               "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds),
               "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(stage / LINEAGE_FILE, lineage)
    commit(stage, out)
    bc.unpersist()
    print(f"[generate] wrote {rows:,} rows in {seconds:.1f}s ({rows / seconds:,.0f} rows/s) -> {out}", flush=True)
    return lineage


def stage_generate(cfg, rt, model: str | None = None, rows: int | None = None, seed: int | None = None,
                   out: str | None = None, conditions: dict[str, str] | None = None) -> dict:
    """``rows`` rows from a registered model (default ``@champion``) into the run's output folder."""
    from gen_pipeline.config import MAX_ROWS
    from gen_pipeline.layout import RunLayout
    from gen_pipeline.registry import resolve

    rows = cfg.generate.rows if rows is None else rows
    if not 0 < rows <= MAX_ROWS:
        raise PipelineError(f"--rows {rows}: must be between 1 and {MAX_ROWS:,}")
    spark = rt.spark_started()  # the JVM starts while the model loads
    rt.mlflow(cfg.name)
    uri = model or f"models:/{cfg.model_name}@champion"
    mv, pyfunc = resolve(uri)
    bundle = pyfunc.bundle
    out_path = Path(out) if out else RunLayout(rt.work_dir, cfg.name).output("generated")
    lineage = {"model_uri": uri, "model_name": mv.name, "model_version": mv.version, "run_id": mv.run_id,
               **bundle.kind.lineage(bundle.transformer)}
    lineage = run_generate(spark(), bundle, rows=rows, seed=cfg.generate.seed if seed is None else seed,
                           out=out_path, lineage=lineage, partition_rows=cfg.generate.rows_per_partition,
                           conditions=conditions)
    bundle.kind.after_generate(out_path, bundle.transformer)
    return {"generated": str(out_path), "rows": lineage["rows"], "model_version": mv.version}

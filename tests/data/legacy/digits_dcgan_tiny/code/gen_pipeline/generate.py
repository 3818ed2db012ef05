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

import gc
import hashlib
import os
import threading
import time
from pathlib import Path

from gen_pipeline.bundle import ModelBundle, partition_seed
from gen_pipeline.errors import PipelineError
from gen_pipeline.storage import commit, staging_dir, write_json

_CACHE: dict[str, ModelBundle] = {}  # per Python worker: bundle digest -> rebuilt model


def broadcast_bundle(spark, bundle: ModelBundle):
    """Ship the bundle's bytes once to every executor; returns (broadcast, cache key)."""
    data = bundle.to_bytes()
    return spark.sparkContext.broadcast(data), hashlib.sha256(data).hexdigest()


def bundle_on_worker(bc, key: str) -> ModelBundle:
    """The model, rebuilt once per Python worker and reused by every task it runs."""
    if key not in _CACHE:
        import torch
        from threadpoolctl import threadpool_limits

        # One core per task (Spark runs one task per core): torch's and numpy's BLAS threads
        # would otherwise oversubscribe the cores. One thread also keeps float results
        # identical across runs.
        torch.set_num_threads(1)
        threadpool_limits(1)
        _CACHE[key] = ModelBundle.from_bytes(bc.value)
        # PySpark's daemon runs a full gc.collect() after every task, and with torch and pandas
        # imported each took 0.13 s here (20 tasks per worker in a 10M-row job: 2.7 s). What
        # exists now (modules, the cached model) lives as long as the worker: freeze it, and
        # those collections only look at what the tasks create.
        gc.freeze()
    return _CACHE[key]


class Progress:
    """Prints ``rows done / total`` from Spark's status tracker while a job runs."""

    def __init__(self, spark, label: str, total_rows: int, total_tasks: int, every: float = 2.0):
        self.tracker = spark.sparkContext.statusTracker()
        self.label, self.total_rows, self.total_tasks, self.every = label, total_rows, total_tasks, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        last = -1
        while not self._stop.wait(self.every):
            done = 0
            for sid in self.tracker.getActiveStageIds():
                info = self.tracker.getStageInfo(sid)
                if info and info.numTasks == self.total_tasks:
                    done = info.numCompletedTasks
            if done != last:
                rows = min(self.total_rows, round(self.total_rows * done / max(1, self.total_tasks)))
                text = f"{rows:,} / {self.total_rows:,} rows " if self.total_rows else ""
                print(f"[{self.label}] {text}({done}/{self.total_tasks} partitions done)", flush=True)
                last = done

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _fault_injection() -> tuple[int, str] | None:
    """Tests set ``GEN_PIPELINE_FAULT_GENERATE=PARTITION:MARKER`` to fail that partition's first
    attempt (the marker file records that it fired); the retry must give identical rows."""
    spec = os.environ.get("GEN_PIPELINE_FAULT_GENERATE")
    if not spec:
        return None
    partition, marker = spec.split(":", 1)
    return int(partition), marker


def rows_per_partition(rows: int, partitions: int, index: int) -> int:
    return rows // partitions + (1 if index < rows % partitions else 0)


def write_part(tables, folder: Path, partition: int, string_statistics: bool = True) -> tuple[int, int]:
    """Stream Arrow tables into ``folder/part-<partition>.parquet``; returns (rows, bytes).

    Dictionary encoding for string columns only (categories repeat; float values rarely do),
    snappy, one row group per table. Without ``string_statistics`` only the numeric columns get
    statistics: every row group of sampled rows holds nearly every category, so a string
    column's min/max could never skip one, and computing them took a fifth of the write.
    Dictionary-typed columns (``sample_arrow(dictionary=True)``) are written as the strings
    they stand for: no Arrow schema is stored, so every reader sees plain string columns.
    Written under a hidden name, then renamed.
    """
    import uuid

    import pyarrow as pa
    import pyarrow.parquet as pq

    final = Path(folder) / f"part-{partition:05d}.parquet"
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    writer, rows = None, 0
    try:
        for table in tables:
            if writer is None:
                coded = [f.name for f in table.schema if pa.types.is_dictionary(f.type)]
                strings = coded + [f.name for f in table.schema if pa.types.is_string(f.type)]
                numeric = [f.name for f in table.schema if f.name not in strings]
                writer = pq.ParquetWriter(tmp, table.schema, compression="snappy", use_dictionary=strings or False,
                                          write_statistics=True if string_statistics else numeric or False,
                                          store_schema=not coded)
            writer.write_table(table)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        return 0, 0
    os.replace(tmp, final)
    return rows, final.stat().st_size


def parts_complete(stage: Path) -> None:
    """After every task has reported: drop the temporary files ``write_part`` left behind (a
    failed attempt, a losing speculative one) and mark the folder complete with ``_SUCCESS``."""
    for tmp in stage.glob(".part-*.tmp"):
        tmp.unlink()
    (stage / "_SUCCESS").touch()


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
                written, size = write_part(b.sample_arrow(n, partition_seed(seed, p), conditions=conditions,
                                                          dictionary=True), stage, p, string_statistics=False)
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
    write_json(stage / "_lineage.json", lineage)
    commit(stage, out)
    bc.unpersist()
    print(f"[generate] wrote {rows:,} rows in {seconds:.1f}s ({rows / seconds:,.0f} rows/s) -> {out}", flush=True)
    return lineage

"""The Spark task kit every job shares: the model shipped once to the executors and rebuilt once
per Python worker, a progress line from Spark's status tracker, Parquet parts written by the
tasks themselves and committed by the driver, and fault injection for the tests."""

from __future__ import annotations

import gc
import hashlib
import os
import threading
from pathlib import Path

from gen_pipeline.bundle import ModelBundle

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
        # PySpark's daemon runs a full gc.collect() after every task, slow with torch and pandas
        # imported. What exists now (modules, the cached model) lives as long as the worker:
        # freeze it, and those collections only look at what the tasks create.
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
    column's min/max could never skip one, and computing them is a large share of the write.
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

"""Spark starts its Python workers from gen_pipeline's daemon, and a reused worker keeps its zip
import caches from task to task instead of re-reading pyspark.zip before each one."""

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_reused_workers_keep_their_zip_import_caches(spark):
    def probe(batches):
        import os
        import sys
        import zipimport

        import pyarrow as pa

        zips = {p: f for p, f in sys.path_importer_cache.items() if isinstance(f, zipimport.zipimporter)}
        for rb in batches:
            yield pa.RecordBatch.from_pydict({
                "pid": [os.getpid()] * rb.num_rows,
                "daemon": [sys.modules["__main__"].__spec__.name] * rb.num_rows,
                "zips": [",".join(sorted(f"{p}:{id(f._files)}" for p, f in zips.items()))] * rb.num_rows})

    rows = spark.range(0, 12, 1, numPartitions=12).mapInArrow(probe, "pid long, daemon string, zips string").collect()
    assert {r["daemon"] for r in rows} == {"gen_pipeline.spark_daemon"}
    assert all(r["zips"] for r in rows), "no zip archive on the workers' sys.path: nothing to check"
    by_worker: dict[int, set[str]] = {}
    for r in rows:
        by_worker.setdefault(r["pid"], set()).add(r["zips"])
    assert max(sum(r["pid"] == pid for r in rows) for pid in by_worker) > 1, "no worker ran two tasks"
    assert all(len(states) == 1 for states in by_worker.values()), by_worker

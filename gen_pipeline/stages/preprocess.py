"""Preprocess (Spark), written once for every data kind: raw records -> split -> quarantine ->
fitted encoding -> encoded Parquet, with counts that reconcile and a manifest.

The kind (``gen_pipeline.kinds``) reads its sources into raw records and fits and applies its
encoding; this stage owns the flow: the deterministic split, the quarantine of every unusable
record with its reason, the ``train_where`` exclusion, the writes, the reconciliation
rows_in == written + quarantined + excluded, the fingerprint and the manifest, committed
atomically into the run's ``preprocess/`` folder (``gen_pipeline.layout``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

from gen_pipeline.config import PipelineConfig
from gen_pipeline.errors import PipelineError
from gen_pipeline.kinds import kind_of
from gen_pipeline.layout import MANIFEST_FILE, SPEC_FILE, SPLITS, PreprocessOutput
from gen_pipeline.storage import PartWriter, commit, remove_hidden_parts, staging_dir, write_json

REASON = "_reason"
# Under the staging folder while preprocess runs: the records a kind's own pass (``RawRecords.finish``)
# wrote, read by the later passes; removed before the output is committed.
RECORDS_FOLDER = "_records"
# The encoded splits are read again every epoch (petastorm, Ray Data streamed): plain-encoded
# floats under zstd take 38% less disk than Spark's default (dictionary pages under snappy)
# and slightly less CPU to read (benchmarks/RESULTS.md). 8 MB row groups.
ENCODED_PARQUET_OPTIONS = {"compression": "zstd", "parquet.enable.dictionary": "false",
                           "parquet.block.size": str(8 * 1024 * 1024)}


def file_listing(files) -> list[dict]:
    """What the fingerprint reads of each input: its path, size and modification time (never
    its bytes: no pass over the data on the driver)."""
    out = []
    for f in files:
        st = os.stat(f)
        out.append({"path": str(f), "bytes": st.st_size,
                    "modified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime))})
    return out


def fingerprint(inputs: list[dict], cfg: PipelineConfig) -> str:
    """A digest of the inputs' listing and every setting that shapes the output (data + transform).
    A catalog table's input also lists its ``files`` (``sources.table_listing``): each one counts."""
    what = {"inputs": [(i["path"], i["bytes"], i["modified"],
                        *([[(f["path"], f["bytes"], f["modified"]) for f in i["files"]]] if i.get("files") else []))
                       for i in inputs],
            "data": cfg.model_dump(mode="json")["data"], "transform": cfg.transform.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def write_splits(spark, good, num_files: int, clean: list[str] | None, columns: list[str], encode, ddl: str,
                 out: PreprocessOutput, record_files: list[str] | None = None,
                 totals: dict[str, int] | None = None) -> dict[str, int]:
    """Write every split's typed rows (``clean``, when the kind has them) and encoded rows in one
    job; returns the rows written per split. Each file holds its split's rows in the order of a
    hash (``_key``), so a file's head is a uniform sample of the rows it holds. Python workers
    write the files with pyarrow as they encode (``clean/<split>/part-NNNNN.parquet``, snappy;
    ``encoded/<split>/...`` as ``ENCODED_PARQUET_OPTIONS``): Spark's writer turns each vector into
    a JVM array written element by element, and one job instead of two writes per split reads the
    records once (benchmarks/RESULTS.md). Two ways to the same files:

    - ``record_files``: the Parquet files of ``good``'s records a kind's own pass wrote (one per
      partition of the input, ``RawRecords.finish``), with ``totals``, the rows ``good`` holds
      per split. One Spark task per file reads it with pyarrow, keeps the usable rows
      (``_reason`` null, and ``_in_fraction`` where there is one), sorts them by (split,
      ``_key``) and writes them (``_write_record_file``): no row crosses into the JVM, and no
      shuffle. A task holds one partition of the input in memory (at most
      ``spark.sql.files.maxPartitionBytes`` of it, as Spark read it).
    - otherwise (a ``good`` that filters by a Spark expression, a kind without its own pass):
      Spark shuffles the rows into ``num_files`` partitions by ``_key``, sorts each by (split,
      ``_key``) and hands them to the workers as Arrow batches.

    A split with no rows is written by Spark, an empty file with the columns."""
    from pyspark.sql import functions as F

    needed = list(dict.fromkeys([*(clean or []), *columns]))
    folders = {s: (str(out.clean(s)) if clean else None, str(out.encoded(s))) for s in SPLITS}
    for paths in folders.values():
        for folder in filter(None, paths):
            Path(folder).mkdir(parents=True, exist_ok=True)

    if record_files:
        record_columns = good.columns

        def run_files(tasks):
            for task, path in tasks:
                yield from _write_record_file(path, task, num_files, totals, record_columns, needed, folders, clean,
                                              columns, encode)

        done = spark.sparkContext.parallelize(list(enumerate(record_files)), len(record_files)) \
            .mapPartitions(run_files).collect()
    else:
        order = F.when(F.col("split") == SPLITS[0], 0)
        for k, split in enumerate(SPLITS[1:], 1):
            order = order.when(F.col("split") == split, k)
        rows = good.select(*needed, order.alias("__split"), "_key").repartition(num_files, "_key") \
            .sortWithinPartitions("__split", "_key")

        def run(batches):
            import pyarrow as pa
            from pyspark import TaskContext

            counts = _write_sorted(batches, TaskContext.get().partitionId(), folders, clean, columns, encode)
            yield pa.RecordBatch.from_arrays([pa.array([k for k, _ in counts], pa.int32()),
                                              pa.array([n for _, n in counts], pa.int64())], names=["split", "rows"])

        done = [(r["split"], r["rows"]) for r in rows.mapInArrow(run, "split int, rows bigint").collect()]
    written = {s: 0 for s in SPLITS}
    for k, n in done:
        written[SPLITS[k]] += int(n)
    for split, (clean_folder, encoded_folder) in folders.items():
        if written[split] == 0:  # nothing in this split: empty files with the columns, as Spark writes them
            if clean_folder:
                good.select(*clean).limit(0).write.mode("overwrite").parquet(clean_folder)
            spark.createDataFrame([], ddl).write.mode("overwrite").options(**ENCODED_PARQUET_OPTIONS) \
                .parquet(encoded_folder)
            continue
        for folder in filter(None, (clean_folder, encoded_folder)):
            remove_hidden_parts(folder)
            (Path(folder) / "_SUCCESS").touch()
    return written


def _write_record_file(path: str, task: int, num_files: int, totals: dict[str, int], record_columns: list[str],
                       needed: list[str], folders: dict, clean, columns, encode) -> list[tuple[int, int]]:
    """One record file's usable rows, sorted by (split, ``_key``); each split's rows written as
    ``ceil(num_files * rows here / totals[split])`` files of consecutive rows (parts ``task *
    num_files + j``), so every split has at least ``num_files`` files over all record files
    (when it has that many rows); returns (split index, rows) per file written. ``record_columns``:
    the record files' columns (whether they carry ``_in_fraction``)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    fraction = ["_in_fraction"] if "_in_fraction" in record_columns else []
    table = pq.read_table(path, columns=[*needed, "split", "_key", REASON, *fraction])
    usable = pc.is_null(table.column(REASON))
    if fraction:
        usable = pc.and_(usable, table.column("_in_fraction"))
    table = table.filter(usable)
    code = pc.index_in(table.column("split"), pa.array(SPLITS))
    table = table.select(needed).append_column("__split", code).append_column("_key", table.column("_key"))
    table = table.take(pc.sort_indices(table, [("__split", "ascending"), ("_key", "ascending")]))
    starts = np.searchsorted(table.column("__split").to_numpy(), np.arange(len(SPLITS) + 1))
    counts = []
    for k, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
        n = int(b - a)
        pieces = min(n, -(-num_files * n // max(1, totals[SPLITS[k]])))
        for j in range(pieces):
            lo, hi = a + n * j // pieces, a + n * (j + 1) // pieces
            counts += _write_sorted(table.slice(lo, hi - lo).to_batches(max_chunksize=65536), task * num_files + j,
                                    folders, clean, columns, encode)
    return counts


def _write_sorted(batches, part: int, folders: dict, clean, columns, encode) -> list[tuple[int, int]]:
    """Arrow batches sorted by ``__split`` (the index in SPLITS) -> each split's clean and encoded
    ``part-<part>.parquet``; returns (split index, rows written) per split met."""
    import itertools

    import numpy as np

    def runs():  # (split index, slice): the batches' runs of one split
        for rb in batches:
            codes = rb.column("__split").to_numpy(zero_copy_only=False)
            cuts = [0, *(np.flatnonzero(np.diff(codes)) + 1).tolist(), len(codes)]
            for a, b in zip(cuts[:-1], cuts[1:]):
                yield int(codes[a]), rb.slice(a, b - a)

    counts = []
    for k, group in itertools.groupby(runs(), key=lambda r: r[0]):
        clean_folder, encoded_folder = folders[SPLITS[k]]
        slices = (sl for _, sl in group)
        with PartWriter(clean_folder, part, compression="snappy") if clean_folder else nullcontext() as writer:
            if writer:
                slices = _teed(slices, clean, writer)
            n = write_vectors(encode(sl.select(columns) for sl in slices), encoded_folder, part)
        counts.append((k, n))
    return counts


def _teed(slices, clean: list[str], writer):
    """``slices`` passed on unchanged, their ``clean`` columns written on the way (``writer``: a
    ``storage.PartWriter``)."""
    for sl in slices:
        writer.write(sl.select(clean))
        yield sl


def write_vectors(batches, folder: str, partition: int, row_group_bytes: int = 8 * 1024 * 1024) -> int:
    """Stream Arrow record batches into ``folder/part-<partition>.parquet`` (``storage.PartWriter``:
    a retried task replaces it whole); returns the rows written."""
    per_group = 1
    # (min/max statistics of a vector column: up to 10% of the write)
    with PartWriter(folder, partition, compression="zstd", use_dictionary=False, write_statistics=False) as writer:
        for rb in batches:
            rb = _vectors_as_binary(rb)
            if not writer.rows:
                per_group = max(1, row_group_bytes * max(1, rb.num_rows) // max(1, rb.nbytes))
            writer.write(rb, row_group_size=per_group)
    return writer.rows


def _vectors_as_binary(rb):
    """A batch with its list<float32> columns (the encoded ``features``) as ``layout.vector_binary``
    stores them."""
    import pyarrow as pa

    from gen_pipeline.layout import vector_binary

    lists = [k for k, f in enumerate(rb.schema) if pa.types.is_list(f.type) and pa.types.is_float32(f.type.value_type)]
    if not lists:
        return rb
    return pa.RecordBatch.from_arrays([vector_binary(c) if k in lists else c for k, c in enumerate(rb.columns)],
                                      names=rb.schema.names)


def reconcile(rows_in: int, rows_written: int, rows_quarantined: int, rows_excluded: int) -> None:
    """Never drop silently: every record read is written, quarantined or excluded (by
    ``train_where``, or left out of the train split by ``train_fraction``)."""
    if rows_in != rows_written + rows_quarantined + rows_excluded:
        raise PipelineError(f"row counts do not reconcile: in={rows_in} written={rows_written} "
                            f"quarantined={rows_quarantined} excluded={rows_excluded}")


def with_split(df, cfg: PipelineConfig, split_columns: tuple[str, ...], order_columns: tuple[str, ...]):
    """Adds ``split`` and an ordering ``_key`` (and, with ``data.train_fraction`` < 1,
    ``_in_fraction``: whether the record is in the train split's share). A record whose source
    says ``test`` is test; one whose source says ``train`` is train or (by hash) validation; the
    rest split by a hash of ``split_columns``, so identical records land in the same split."""
    from pyspark.sql import functions as F

    u = F.pmod(F.xxhash64(F.lit(cfg.data.split_salt), *[F.col(c) for c in split_columns]),
               F.lit(1_000_000)) / 1_000_000.0
    test, val = cfg.data.test_fraction, cfg.data.test_fraction + cfg.data.validation_fraction
    by_hash = F.when(u < test, "test").when(u < val, "validation").otherwise("train")
    in_train_file = F.when(u < cfg.data.validation_fraction, "validation").otherwise("train")
    split = F.when(F.col("split_hint") == "test", "test") \
        .when(F.col("split_hint") == "train", in_train_file).otherwise(by_hash)
    key = F.xxhash64(F.lit("order:" + cfg.data.split_salt), *[F.col(c) for c in order_columns])
    df = df.withColumn("split", split).withColumn("_key", key)
    if cfg.data.train_fraction < 1.0:
        # A seeded share of the train split, by its own hash of ``order_columns``: independent of
        # the split's hash, and a smaller share keeps a subset of the records a larger one keeps.
        v = F.pmod(F.xxhash64(F.lit("fraction:" + cfg.data.split_salt), *[F.col(c) for c in order_columns]),
                   F.lit(1_000_000)) / 1e6
        df = df.withColumn("_in_fraction", (F.col("split") != "train") | (v < F.lit(cfg.data.train_fraction)))
    return df


def run_preprocess(spark, cfg: PipelineConfig, datasets_dir: Path | None, out_dir: Path, records=None,
                   work_dir: Path | None = None) -> dict:
    """Preprocess the configured dataset (or ``records`` a kind already read) into ``out_dir``;
    returns the manifest. ``work_dir`` holds what the kind keeps between runs (a user table's
    inferred schema); by default the folder above the run's."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    t0 = time.perf_counter()
    kind = kind_of(cfg)
    records = records or kind.read(spark, cfg, datasets_dir, Path(work_dir or Path(out_dir).parent.parent.parent))
    position = kind.position
    parsed = with_split(records.frame, cfg, kind.split_columns, ("source", position))
    stage = staging_dir(out_dir)
    out = PreprocessOutput(stage)
    records_folder = stage / RECORDS_FOLDER
    if records.finish:
        # The kind's pass that judges each record (a table's validation), after the split: run
        # now, its tasks write the records under the staging folder, and the passes below read them.
        parsed = records.finish(parsed, records_folder)
    else:
        # On disk, not in the JVM heap: at 10M rows the cache outgrows the driver's storage memory,
        # and its spill from memory ran the 2 GB driver out of heap (benchmarks/RESULTS.md).
        parsed = parsed.persist(StorageLevel.DISK_ONLY)
    stats = parsed.groupBy("source", "split", F.col(REASON).isNull().alias("ok")).count().collect()
    rows_in = sum(r["count"] for r in stats)
    if rows_in == 0:
        raise PipelineError(f"{', '.join(i['path'] for i in records.inputs)}: no records found (empty input?)")
    bad = parsed.filter(F.col(REASON).isNotNull())
    if all(r["ok"] for r in stats):  # nothing to quarantine: an empty file with the columns, no pass
        bad = bad.limit(0)
    bad.select(*kind.quarantine_columns, F.col(REASON).alias("reason")).coalesce(1) \
        .write.mode("overwrite").parquet(str(out.quarantine))
    reasons = spark.read.parquet(str(out.quarantine)) \
        .groupBy(F.trim(F.regexp_extract("reason", kind.reason_group, 1)).alias("kind")).count() \
        .orderBy(F.desc("count")).limit(20).collect()
    if all(not r["ok"] for r in stats):  # nothing usable: say why instead of fitting on nothing
        raise PipelineError(f"{', '.join(i['path'] for i in records.inputs)}: none of the {rows_in:,} records is "
                            f"usable; most often: {reasons[0]['kind']} ({reasons[0]['count']:,} records); check the "
                            "input and its schema (data.schema)")

    good = parsed.filter(F.col(REASON).isNull())
    excluded = 0
    if cfg.data.train_where:
        keep = (F.col("split") != "train") | F.expr(cfg.data.train_where)
        excluded = good.filter(~keep).count()
        good = good.filter(keep)
    dropped = 0
    if cfg.data.train_fraction < 1.0:
        dropped = good.filter(~F.col("_in_fraction")).count()
        good = good.filter(F.col("_in_fraction"))
    spec = kind.fit(spark, good, records, cfg)
    split_rows = {s: 0 for s in SPLITS}
    for r in stats:
        if r["ok"]:
            split_rows[r["split"]] += r["count"]
    split_rows["train"] -= excluded + dropped
    columns, encode, ddl = kind.encoder(spec)
    clean = kind.clean_columns(spec)
    # the files the kind's pass wrote, unless a Spark expression (train_where) decides which rows go
    files = sorted(str(p) for p in records_folder.glob("part-*.parquet")) \
        if records.finish and not cfg.data.train_where else None
    written = write_splits(spark, good, cfg.data.num_files, clean, columns, encode, ddl, out, files, split_rows)
    for split in SPLITS:
        if written[split] != split_rows[split]:
            raise PipelineError(f"split {split}: {written[split]} rows written, {split_rows[split]} expected")
    extras = kind.manifest_extras(spark, out, spec, records)
    parsed.unpersist()
    shutil.rmtree(records_folder, ignore_errors=True)

    rows_quarantined = sum(r["count"] for r in stats if not r["ok"])
    rows_written = sum(split_rows.values())
    reconcile(rows_in, rows_written, rows_quarantined, excluded + dropped)
    per_file: dict[str, dict] = {}
    for r in stats:
        d = per_file.setdefault(r["source"], {"rows_in": 0, "rows_quarantined": 0})
        d["rows_in"] += r["count"]
        d["rows_quarantined"] += 0 if r["ok"] else r["count"]
    inputs = [{**i, **per_file.get(Path(i["path"]).name, {"rows_in": 0, "rows_quarantined": 0})}
              for i in records.inputs]
    manifest = {
        "dataset": records.name, "kind": kind.name, "inputs": inputs,
        "rows_in": rows_in, "rows_written": rows_written, "rows_quarantined": rows_quarantined,
        "rows_excluded": excluded, "excluded_by": cfg.data.train_where, "split_by": cfg.data.split,
        "train_fraction": cfg.data.train_fraction, "rows_left_out_by_train_fraction": dropped,
        "splits": split_rows, "quarantine_reasons": {r["kind"]: r["count"] for r in reasons},
        **extras,
        "fingerprint": fingerprint(records.inputs, cfg), "spec_version": spec["version"],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (stage / SPEC_FILE).write_text(json.dumps(spec, indent=1))
    write_json(stage / MANIFEST_FILE, manifest)
    for name, content in kind.extra_files(spec, records).items():
        write_json(stage / name, content)
    commit(stage, out_dir)
    print(f"[preprocess] {kind.name} records in={rows_in} written={rows_written} quarantined={rows_quarantined} "
          f"excluded from train={excluded}" + (f" left out by train_fraction={dropped}" if dropped else "")
          + f" splits={split_rows} {kind.describe(spec)} -> {out_dir}", flush=True)
    return manifest


def stage_preprocess(cfg: PipelineConfig, rt) -> dict:
    from gen_pipeline.layout import RunLayout

    out = RunLayout(rt.work_dir, cfg.name).preprocess
    manifest = run_preprocess(rt.spark(), cfg, rt.datasets_dir, out, work_dir=rt.work_dir)
    return {"preprocess": str(out), "rows_written": manifest["rows_written"],
            "rows_quarantined": manifest["rows_quarantined"]}

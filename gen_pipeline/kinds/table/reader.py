"""Reading raw table files on Spark: numbered lines, parsed into typed rows or quarantine reasons,
and the mapInArrow body that encodes typed rows for training."""

from __future__ import annotations

from pathlib import Path

from gen_pipeline.errors import PipelineError
from gen_pipeline.kinds.table.schema import REASON, TableSchema, parse_table
from gen_pipeline.kinds.table.transforms import TableTransformer


def _parsed_schema_ddl(schema: TableSchema) -> str:
    return f"source string, line bigint, text string, {schema.spark_ddl()}, `{REASON}` string"


def _numbered_lines(spark, files: list[Path]):
    """(source, line, text) for every line of ``files``, read by Spark's JVM text source.

    Exact 1-based line numbers without a Python pass: each input split's lines are contiguous in
    one partition, so a line's number is the lines of the earlier splits of its file (ordered by
    byte offset) plus its position in its split (``monotonically_increasing_id``'s low bits).
    """
    from pyspark.sql import functions as F

    raw = spark.read.text([f.resolve().as_uri() for f in files]).select(
        F.input_file_name().alias("path"), F.input_file_block_start().alias("block"),
        F.monotonically_increasing_id().alias("mid"), F.col("value").alias("text"))
    splits = raw.groupBy("path", "block").agg(F.count(F.lit(1)).alias("n"), F.min("mid").alias("first")).collect()
    bases, seen = [], {}
    for r in sorted(splits, key=lambda r: (r["path"], r["block"])):
        before = seen.get(r["path"], 0)
        bases.append((r["path"], r["block"], before - r["first"] + 1))
        seen[r["path"]] = before + r["n"]
    base = spark.createDataFrame(bases, "path string, block bigint, base bigint")
    return raw.join(F.broadcast(base), ["path", "block"]).select(
        F.element_at(F.split("path", "/"), -1).alias("source"),
        (F.col("mid") + F.col("base")).alias("line"), "text")


def data_lines(spark, files: list[Path], schema: TableSchema, max_rows_per_file: int | None = None):
    """(source, line, text) for every line of ``files`` after the header, checked to exist and
    be non-empty. ``max_rows_per_file`` keeps only the lines numbered up to that many after the
    header (the tiny test configs). Blank and comment lines are left to ``parse_table``."""
    from pyspark.sql import functions as F

    files = [Path(f) for f in files]
    for f in files:
        if not f.is_file():
            raise PipelineError(f"{f}: input file not found; fetch the dataset or pass an existing file")
        if f.stat().st_size == 0:
            raise PipelineError(f"{f}: the input file is empty; nothing to read")
    lines = _numbered_lines(spark, files)
    first = 2 if schema.header else 1
    lines = lines.where(F.col("line") >= first)
    if max_rows_per_file:
        lines = lines.where(F.col("line") < first + max_rows_per_file)
    return lines


def read_raw_lines(spark, files: list[Path], schema: TableSchema, max_rows_per_file: int | None = None):
    """Every data line of ``files`` parsed into typed columns plus ``_reason`` (None = usable).

    A header line, blank lines and comment lines (e.g. adult.test's ``|1x3 Cross validator``) are
    not data.
    """
    def parse(batches):
        import pyarrow as pa

        for rb in batches:
            yield from parse_table(pa.Table.from_batches([rb]), schema).to_batches()

    lines = data_lines(spark, files, schema, max_rows_per_file)
    return lines.mapInArrow(parse, _parsed_schema_ddl(schema))


def _encode_fn(spec: dict, schema: TableSchema):
    """mapInArrow body: typed rows -> ``features`` list<float32>; encoding never drops a row."""
    def encode(batches):
        import pyarrow as pa

        transformer = TableTransformer(spec)
        for rb in batches:
            pdf = rb.to_pandas()
            x, _ = transformer.transform(pdf, strict=True)
            values = pa.array(x.reshape(-1), type=pa.float32())
            offsets = pa.array(range(0, x.size + 1, x.shape[1]), type=pa.int32())
            yield pa.RecordBatch.from_arrays([pa.ListArray.from_arrays(offsets, values)], names=["features"])
    return encode

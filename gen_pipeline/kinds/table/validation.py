"""The validation pass over records Spark's readers split into string fields: each field checked
and typed with Arrow kernels (numbers, integers, booleans, dates, timestamps), and every record
that cannot be used given its reason, naming the column (``sources.read_table`` runs it)."""

from __future__ import annotations

import csv
import io

import numpy as np

from gen_pipeline.kinds.table.schema import REASON, TIMESTAMPS, TableSchema, base_dtype, spark_type

_CORRUPT = "__corrupt"
_BINARY = "__binary"
_CAST = "__typed_"  # Spark's own cast of a date/timestamp/boolean/decimal field, next to the raw string
_NUMBER = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_NON_FINITE = r"(?i)^[+-]?(nan|inf|infinity)$"


# Columns Spark itself types (``try_cast`` beside the raw string, or ``_parse_datetime``): booleans,
# dates, timestamps of either zone kind, and decimals (Spark rounds half up to the scale).
SPARK_CAST = ("bool", "date", *TIMESTAMPS, "decimal")


def _spark_type(c) -> str:
    return spark_type(c.dtype)


def _parse_datetime(c):
    from pyspark.sql import functions as F

    return F.expr(f"try_to_timestamp(`{c.name}`, '{c.format}')").cast(_spark_type(c))


def validated_ddl(schema: TableSchema) -> str:
    return f"source string, line bigint, text string, {schema.spark_ddl()}, `{REASON}` string"


def validate(records, schema: TableSchema, fmt: str, summaries=None):
    """The validation pass over ``records`` (a reader's string fields, ``sources.read_records``):
    the typed columns and ``_reason``, with ``text`` kept only for the records it rejects (the
    raw text of every usable record would otherwise come back from the Python worker only to be
    dropped). Columns the records carry beyond the reader's (a split assigned from the text
    before this pass) are passed through unchanged.

    ``summaries``: (``fitting.PartitionSummaries``, an accumulator of ``fitting.Summaries``): each
    task also summarises its partition's usable records for the fit as they pass (and samples
    them; only those with ``_in_fraction`` true when the records carry that column) and adds the
    summary under its partition's id, so the fit needs no pass of its own over the rows."""
    ddl, passed = _output(records, schema)
    return records.mapInArrow(_validate_fn(schema, fmt, passed, summaries), ddl)


def validate_into(records, schema: TableSchema, fmt: str, folder: str, summaries=None):
    """``validate``, run now, with each task writing its partition's validated records to
    ``folder/part-NNNNN.parquet`` itself (pyarrow, from the Arrow table it already holds) instead
    of sending them back to the JVM; returns (the records read back from ``folder`` by Spark's
    Parquet source, the number of partitions the pass ran). Later passes read those files, so no
    cache of the records is built, and the typed columns cross from Python to the JVM once, in
    Spark's vectorized Parquet reader, instead of as Arrow batches and again into a cache
    (benchmarks/RESULTS.md, preprocess at scale). ``folder`` must be a path every executor
    writes to and the driver reads (the work dir, as for preprocess's outputs)."""
    from pathlib import Path

    from gen_pipeline.storage import remove_hidden_parts

    ddl, passed = _output(records, schema)
    validated = _validate_fn(schema, fmt, passed, summaries)
    Path(folder).mkdir(parents=True, exist_ok=True)

    def run(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        from gen_pipeline.storage import PartWriter

        part = TaskContext.get().partitionId()
        # dictionary pages for the categories and the split, no compression: read back within minutes
        with PartWriter(folder, part, compression="none") as writer:
            for rb in validated(batches):
                writer.write(rb)
        yield pa.RecordBatch.from_arrays([pa.array([part], pa.int32()), pa.array([writer.rows], pa.int64())],
                                         names=["partition", "rows"])

    done = records.mapInArrow(run, "partition int, rows bigint").collect()
    remove_hidden_parts(folder)
    return records.sparkSession.read.schema(ddl).parquet(str(folder)), len(done)


def _output(records, schema: TableSchema) -> tuple[str, list[str]]:
    """The validated records' DDL and the columns passed through unchanged (any the reader's
    records carry beyond their own: the split assigned before the pass)."""
    own = {"source", "line", "text", _CORRUPT, _BINARY, *schema.names}
    extra = [f for f in records.schema.fields if f.name not in own and not f.name.startswith(_CAST)]
    return validated_ddl(schema) + "".join(f", `{f.name}` {f.dataType.simpleString()}" for f in extra), \
        [f.name for f in extra]


# ---------------------------------------------------------------------------------------------
# The validation pass: string fields -> typed columns + reasons (Arrow kernels).
# ---------------------------------------------------------------------------------------------
def _validate_fn(schema: TableSchema, fmt: str, passed: list[str], summaries=None):
    plan, acc = summaries or (None, None)

    def run(batches):
        import pyarrow as pa
        import pyarrow.compute as pc
        from pyspark import TaskContext

        part = plan.start(TaskContext.get().partitionId()) if plan else None
        for rb in batches:
            table = pa.Table.from_batches([rb])
            out = validate_fields(table, schema, fmt)
            rejected = pc.is_valid(out.column(REASON))
            if part:  # the fit's rows: the usable ones, in the train split's share (``_in_fraction``)
                kept = out.select(plan.names)
                left_out = pc.or_(rejected, pc.invert(table.column("_in_fraction"))) \
                    if "_in_fraction" in passed else rejected
                part.add(kept.filter(pc.invert(left_out)) if pc.any(left_out).as_py() else kept)
            out = out.set_column(out.schema.get_field_index("text"), "text",
                                 pc.if_else(rejected, out.column("text"), pa.scalar(None, pa.string())))
            for name in passed:
                out = out.append_column(name, table.column(name))
            yield from out.to_batches()
        if part:
            acc.add({part.partition: part.finish()})
    return run


def _field_count(text: str, schema: TableSchema) -> int:
    try:
        return len(next(csv.reader(io.StringIO(text), delimiter=schema.separator, quotechar=schema.quote or '"'), []))
    except csv.Error:
        return -1


def _numbers(field, present):
    """(is a number, the value (0 where not), is NaN/inf) of a numeric column's trimmed fields.
    Arrow's float parser over the whole column first: when every present field parses to a
    finite value, the two regular expressions (most of the validation pass's time) are not
    needed, since for finite results that parser accepts exactly what ``_NUMBER`` matches.
    Otherwise the fields are judged one by one with the expressions."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        num = pc.cast(pc.if_else(present, field, "0"), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        num = None
    if num is not None and not pc.any(pc.invert(pc.is_finite(num))).as_py():
        return present, num, pc.and_(present, pa.scalar(False))
    is_num = pc.fill_null(pc.match_substring_regex(field, _NUMBER), False)
    num = pc.cast(pc.if_else(is_num, field, "0"), pa.float64())
    non_finite = pc.and_(present, pc.or_(pc.fill_null(pc.match_substring_regex(field, _NON_FINITE), False),
                                         pc.is_inf(num)))
    return is_num, num, non_finite


def validate_fields(table, schema: TableSchema, fmt: str = "csv"):
    """Records with their fields as strings (``source``, ``line``, ``text``, one string column per
    schema column, the reader's corrupt-record column and Spark's casts of date/time/boolean
    fields) -> the typed columns and ``_reason``. Reasons name the column and the value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n, n_cols = table.num_rows, len(schema.columns)
    text = table.column("text")
    corrupt = pc.is_valid(table.column(_CORRUPT)).to_numpy(zero_copy_only=False)
    reasons: list[str | None] = [None] * n
    binary = pc.fill_null(pc.or_(pc.match_substring(text, "\x00"), table.column(_BINARY)),
                          False).to_numpy(zero_copy_only=False)
    texts = text.to_pylist() if corrupt.any() else None
    for i in np.flatnonzero(corrupt & ~binary):
        t = texts[i] or ""
        if fmt == "json":
            reasons[i] = "not a JSON record (or not one object per line)"
        else:
            got = _field_count(t, schema)
            reasons[i] = (f"expected {n_cols} fields separated by {schema.separator!r}, got {got}" if got >= 0
                          else "unbalanced quotes: not a CSV record")
    for i in np.flatnonzero(binary):
        reasons[i] = "binary or non-UTF-8 bytes: not text (a binary file named .csv, or set data.encoding)"
    skip = corrupt | binary
    problems: dict[int, list[str]] = {}

    def flag(mask, field, message: str) -> None:
        for i in np.flatnonzero(np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)
                                & ~skip):
            problems.setdefault(int(i), []).append(message.format(value=field[int(i)].as_py()))

    columns = []
    for col in schema.columns:
        field = pc.utf8_trim_whitespace(table.column(col.name))
        if schema.strip_suffix and col.dtype == "string":
            cut = pc.utf8_slice_codeunits(field, 0, -len(schema.strip_suffix))
            field = pc.if_else(pc.ends_with(field, schema.strip_suffix), cut, field)
        missing = pc.fill_null(pc.or_(pc.equal(field, schema.missing_token), pc.equal(field, "")), True)
        present = pc.invert(missing)
        if col.dtype == "string":
            columns.append(pc.if_else(missing, pa.scalar(None, pa.string()), field))
        elif base_dtype(col.dtype) in ("bool", "date", *TIMESTAMPS):
            typed = table.column(_CAST + col.name)
            bad = pc.and_(present, pc.is_null(typed))
            what = {"bool": "a boolean", "date": "a date"}.get(col.dtype, "a timestamp")
            hint = f" in the format {col.format!r}" if col.format else ""
            flag(bad, field, f"column {col.name}: {{value!r}} is not {what}{hint}")
            columns.append(pc.if_else(present, typed, pa.scalar(None, typed.type)))
        else:
            is_num, num, non_finite = _numbers(field, present)
            not_number = pc.and_(present, pc.invert(pc.or_(is_num, non_finite)))
            flag(not_number, field, f"column {col.name}: {{value!r}} is not a number")
            flag(non_finite, field, f"column {col.name}: {{value!r}} is not finite (NaN/inf are not data)")
            ok = pc.and_(present, pc.and_(is_num, pc.invert(non_finite)))
            if base_dtype(col.dtype) == "decimal":  # Spark's decimal cast of the field; null: it does not fit
                typed = table.column(_CAST + col.name)
                overflow = pc.and_(ok, pc.is_null(typed))
                flag(overflow, field, f"column {col.name}: {{value!r}} does not fit {col.dtype}")
                ok = pc.and_(ok, pc.invert(overflow))
                columns.append(pc.if_else(ok, typed, pa.scalar(None, typed.type)))
            elif col.dtype == "int":
                fractional = pc.and_(ok, pc.not_equal(num, pc.floor(num)))
                flag(fractional, field, f"column {col.name}: {{value!r}} is not an integer")
                ok = pc.and_(ok, pc.invert(fractional))
                columns.append(pc.if_else(ok, pc.cast(pc.if_else(ok, num, 0.0), pa.int64()),
                                          pa.scalar(None, pa.int64())))
            else:
                columns.append(pc.if_else(ok, num, pa.scalar(None, pa.float64())))
    for i, msgs in problems.items():
        reasons[i] = "; ".join(msgs)
    types = schema.arrow_schema(spark=True)
    arrays = [table.column("source"), table.column("line"), text]
    arrays += [pc.cast(c, types.field(k).type) for k, c in enumerate(columns)]
    arrays.append(pa.array(reasons, type=pa.string()))
    return pa.Table.from_arrays(arrays, names=["source", "line", "text", *schema.names, REASON])

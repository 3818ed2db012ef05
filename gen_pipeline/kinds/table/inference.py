"""A table's schema inferred from its data: shown, written as an editable file, reused.

On the first preprocess of a table with no schema, each column's kind is inferred from Spark's
types (Parquet, ORC) or its text (CSV, JSON) over a bounded sample: about ``sample_rows`` records
drawn (seeded) from the whole input, read by Spark (an input of up to 1.5x that many: all of it).
Not the first records: a file sorted by date holds one month in its head. The rules, in order, over the sample's non-missing values (``n`` rows,
``k`` distinct values):

1. no value at all: ``constant`` (always null), with a warning; one distinct value: ``constant``
   (of the column's type; in a text file a number, ``2013``, is an ``int`` or ``float``).
2. every value ``true``/``false`` (also ``t/f``, ``yes/no``, ``y/n``, any case), or a boolean
   Parquet column: ``boolean``.
3. every value a number: ``int`` when all are integral, else ``float``. An integer column with at
   most ``max_int_categories`` (20) distinct values is ``categorical`` (codes, ratings, counts of
   children); an integer column whose values are all distinct (``k == n >= 20``) is an
   ``identifier``; any other number is ``continuous``. (``0``/``1`` is categorical, not boolean.)
4. every value an ISO 8601 date (``2024-03-01``) or ``yyyy/MM/dd`` / ``dd/MM/yyyy`` / ``MM/dd/yyyy``: ``date``; with
   a time of day (``2024-03-01 12:30:00``, ``T`` or space): ``datetime``, a wall-clock time; with
   a zone offset after it (``2024-03-01T12:30:00Z``, ``+02:00``, ``-0500``): ``datetime``, an
   instant (``timestamp_ltz``, read in UTC). Date/timestamp Parquet columns likewise.
5. strings, all distinct (``k == n >= 20``), short and without spaces: ``identifier``; long
   (mean length over 40 characters, or over 5 words) and mostly distinct (``k > n / 2``): free
   ``text`` (left out of the model, with a warning); any other string: ``categorical`` (a column
   with many categories is capped at encoding time: ``transform.max_categories``).

Text cells equal to the most frequent of ``NA``, ``N/A``, ``null``, ``None``, ``nan``, ``?``, ``-``
(if any occurs) are missing values (``missing_token``); empty fields are always missing.
A kind holds when every sampled value fits it, or, in a sample of 100 or more, all but under
1% (``TOLERANCE``): those few are quarantined when the table is read, with their reason.
In Parquet, ORC and catalog tables, which carry their own types, rules 2-4 read only those types:
a string column stays a string (``Yes``/``No`` or ``2024-01-02`` strings are categorical), so
generate writes the input's types: a ``DECIMAL(p,s)`` column is ``decimal(p,s)`` (continuous,
generated at its scale; as categories or an identifier too), a ``TIMESTAMP`` (an instant,
Parquet's isAdjustedToUTC) is ``timestamp_ltz`` and a ``TIMESTAMP_NTZ`` (wall clock) is
``timestamp``, a Parquet timestamp stored in milliseconds adds ``[ms]`` (generated in
milliseconds), and a constant or all-null column keeps its type. ``label`` is never inferred: it
is declared for a column carried through scoring but never generated. The ``--target`` column is
modelled like any other.

The schema goes to ``<work>/schemas/<name>.yaml``, which preprocess never overwrites: edit it
and the next run uses it (``data.reinfer: true`` infers again). ``data.schema: PATH`` uses a
given file; ``data.columns: {zip: categorical}`` overrides single kinds. A declared kind the
data contradicts (``continuous`` over words, an ``identifier`` with repeats) fails with the
column, what was declared and what was found.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pandas as pd

from gen_pipeline.errors import PipelineError
from gen_pipeline.kinds.table.schema import Column, TableSchema, base_dtype, decimal_of

SAMPLE_ROWS = 20_000
MAX_INT_CATEGORIES = 20
MIN_ID_ROWS = 20
TOLERANCE = 0.01  # the share of malformed values a kind tolerates in a sample of 100 or more
_MISSING = ("", "NA", "N/A", "n/a", "na", "null", "NULL", "None", "none", "nan", "NaN", "?", "-")
_BOOL = {"true", "false", "t", "f", "yes", "no", "y", "n"}
_NUMBER = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_INTEGRAL = re.compile(r"^[+-]?[0-9]+$")
_DATE_FORMATS = (("%Y-%m-%d", None), ("%Y/%m/%d", "yyyy/MM/dd"), ("%d/%m/%Y", "dd/MM/yyyy"),
                 ("%m/%d/%Y", "MM/dd/yyyy"))
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)?$")
_ZONE = re.compile(r"(?:Z|[+-]\d{2}(?::?\d{2})?)$")  # an offset or Z after the time of day: an instant
_INT_TYPES = ("tinyint", "smallint", "byte", "short", "integer", "int", "long", "bigint")  # Spark's names
_KIND_DTYPE = {"boolean": "bool", "datetime": "timestamp", "date": "date", "text": "string"}
# Spark's date and timestamp types -> dtypes: TIMESTAMP is an instant, TIMESTAMP_NTZ a wall-clock time.
_TIME_DTYPE = {"date": "date", "timestamp": "timestamp_ltz", "timestamp_ntz": "timestamp"}


# ---------------------------------------------------------------------------------------------
# The rules, on one column's sample (pure pandas: unit-tested without Spark)
# ---------------------------------------------------------------------------------------------
def _mostly(mask: pd.Series) -> bool:
    """All values, or (in a sample of 100 or more) all but under ``TOLERANCE`` of them: a few
    malformed values do not change a column's kind; they are quarantined when read."""
    share = float(mask.mean()) if len(mask) else 0.0
    return share == 1.0 or (len(mask) >= 100 and share >= 1 - TOLERANCE)


def infer_column(name: str, values: pd.Series, spark_type: str = "string", typed: bool = False) -> tuple[Column, str]:
    """(column, why) for one column's sampled values: strings for text formats, or the values
    of a typed column (``spark_type`` is Spark's simple type name: long, double, boolean, ...).
    ``typed``: the source has its own types (Parquet, ORC, a catalog table), so a string
    column stays a string (categorical, identifier, text): generate writes the input's types,
    and ``Yes``/``No`` or ``2024-01-02`` strings there are regenerated as such strings."""
    v = values.dropna()
    parse = spark_type == "string" and not typed  # text cells that may be read as other types
    if spark_type == "string":
        v = v.astype(str).str.strip()
        v = v[v != ""]
    n, k = len(v), int(v.nunique())
    numeric_type = spark_type in (*_INT_TYPES, "float", "double") \
        or spark_type.startswith("decimal")
    decimal = spark_type.replace(" ", "") if decimal_of(spark_type.replace(" ", "")) else None
    own_dtype = decimal or _TIME_DTYPE.get(spark_type) or ("bool" if spark_type == "boolean" else None) or (
        "int" if numeric_type and spark_type not in ("float", "double") else "float" if numeric_type else "string")
    if n == 0:
        return Column(name, "constant", own_dtype), "no value in the sample (all missing)"
    if spark_type == "boolean" or (parse and set(v.str.lower().unique()) <= _BOOL
                                                        and v.str.lower().nunique() == 2):
        return Column(name, "boolean", "bool"), "true/false values"
    if k == 1:
        if parse and own_dtype == "string" and v.str.match(_NUMBER).all():  # "2013" in a CSV stays a number
            own_dtype = "int" if v.str.match(_INTEGRAL).all() else "float"
        return Column(name, "constant", own_dtype), "one distinct value"
    if spark_type in _TIME_DTYPE:  # dates, and timestamps of their zone kind (an instant, or wall clock)
        kind = "date" if spark_type == "date" else "datetime"
        return Column(name, kind, _TIME_DTYPE[spark_type]), f"{spark_type} column"
    if parse and _mostly(v.str.match(_NUMBER)):
        v = v[v.str.match(_NUMBER)]  # the rest will be quarantined as "not a number"
        n, k = len(v), int(v.nunique())
    if numeric_type or (parse and v.str.match(_NUMBER).all()):
        integral = spark_type in _INT_TYPES or (
            spark_type == "string" and v.str.match(_INTEGRAL).all())
        if spark_type.startswith("decimal") and spark_type.endswith(",0)"):
            integral = True
        if integral and k <= MAX_INT_CATEGORIES:  # a DECIMAL(p,0) stays one: its values come back as decimals
            return Column(name, "categorical", decimal or "int"), \
                f"integers with {k} distinct values (<= {MAX_INT_CATEGORIES})"
        if integral and k == n >= MIN_ID_ROWS:
            return Column(name, "identifier", decimal or "int"), f"integers, all {n} distinct"
        return Column(name, "continuous", decimal or ("int" if integral else "float")), \
            f"{'integers' if integral else 'numbers'} with {k} distinct values" + (f" ({decimal})" if decimal else "")
    if spark_type == "string":
        if parse and _mostly(v.str.match(_ISO_DATETIME)):
            if _mostly(v.str.slice(16).str.contains(_ZONE)):  # 2013-01-01T10:00:00Z, ...+02:00: instants
                return Column(name, "datetime", "timestamp_ltz"), "ISO 8601 date-times with a zone offset"
            return Column(name, "datetime", "timestamp"), "ISO 8601 date-times"
        for py, spark_fmt in _DATE_FORMATS if parse else ():
            if _mostly(v.str.len().between(8, 10) & pd.to_datetime(v, format=py, errors="coerce").notna()):
                return Column(name, "date", "date", spark_fmt), f"dates ({spark_fmt or 'ISO 8601'})"
        length = v.str.len().mean()
        words = v.str.count(" ").mean() + 1
        if k == n >= MIN_ID_ROWS and length <= 40 and not v.str.contains(" ").any():
            return Column(name, "identifier", "string"), f"strings, all {n} distinct"
        if (length > 40 or words > 5) and k > n / 2:
            return Column(name, "text", "string"), f"free text (mean {length:.0f} characters, {k} of {n} distinct)"
        return Column(name, "categorical", "string"), f"strings with {k} distinct values"
    return Column(name, "categorical", "string"), f"{spark_type} column"


def check_declared(col: Column, values: pd.Series, spark_type: str = "string") -> str | None:
    """Why the sampled ``values`` contradict the declared ``col`` (None: they fit)."""
    v = values.dropna()
    if spark_type == "string":
        v = v.astype(str).str.strip()
        v = v[v != ""]
    found, _ = infer_column(col.name, values, spark_type)
    bad = None
    if col.kind == "continuous" or col.dtype in ("int", "float"):
        if spark_type == "string":
            wrong = v[~v.str.match(_NUMBER)]
            if len(wrong) and not _mostly(v.str.match(_NUMBER)):
                bad = f"non-numbers such as {wrong.iloc[0]!r}"
            elif col.dtype == "int" and not _mostly(v.str.match(_INTEGRAL) | ~v.str.match(_NUMBER)):
                bad = f"fractions such as {v[~v.str.match(_INTEGRAL)].iloc[0]!r}"
        elif spark_type in ("string", "date", "timestamp", "timestamp_ntz", "boolean"):
            bad = f"a {spark_type} column"
    elif col.kind == "boolean" and found.kind not in ("boolean", "constant"):
        bad = f"values such as {v.iloc[0]!r}" if len(v) else None
    elif col.kind in ("date", "datetime") and found.kind not in ("date", "datetime", "constant"):
        bad = f"values such as {v.iloc[0]!r}" if len(v) else None
    elif col.kind == "identifier" and v.duplicated().any():
        bad = f"repeated values such as {v[v.duplicated()].iloc[0]!r}"
    elif col.kind == "constant" and v.nunique() > 1:
        bad = f"{v.nunique()} distinct values"
    if bad is None:
        return None
    return f"column {col.name}: declared {col.kind} ({col.dtype}) but the data has {bad} (looks {found.kind})"


# ---------------------------------------------------------------------------------------------
# Over Spark: the bounded sample, the table, the file
# ---------------------------------------------------------------------------------------------
def _sniff_csv(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in (",", ";", "\t", "|")}
    return max(counts, key=counts.get) if max(counts.values()) else ","


def sample_table(spark, source, options: dict | None = None, sample_rows: int = SAMPLE_ROWS):
    """(pandas sample, Spark type name per column, reading options) of the first records."""
    from gen_pipeline.kinds.table.sources import TableSource, _csv_options, list_inputs, load_columnar

    src = source if isinstance(source, TableSource) else TableSource.of(source)
    opts = dict(options or src.options)
    if src.table:
        df = spark.table(src.table)
        opts["typed"] = True
    else:
        inputs = list_inputs(spark, src.paths)
        uris = [i["uri"] for i in inputs]
        fmt = src.resolved_format([i["path"] for i in inputs])
        if fmt == "csv":
            first = spark.read.text(uris[:1]).limit(1).collect()
            first = first[0]["value"].lstrip("\ufeff") if first else ""
            opts.setdefault("separator", opts.pop("delimiter", None) or _sniff_csv(first))
            opts.setdefault("header", True)
            base = TableSchema(columns=(Column("x", "categorical", "string"),), separator=opts["separator"],
                               header=bool(opts["header"]),
                               **{k: v for k, v in opts.items() if k in ("quote", "escape", "encoding", "multi_line")})
            if base.header:
                from gen_pipeline.kinds.table.sources import _split_header, check_header

                heads = [h.strip() for h in _split_header(first, base)]
                check_header(heads, dataclasses.replace(base, columns=tuple(
                    Column(h, "categorical", "string") for h in dict.fromkeys(heads))), inputs[0]["path"])
            read_opts = {k: v for k, v in _csv_options(base).items() if k not in ("mode", "columnNameOfCorruptRecord")}
            df = spark.read.options(**read_opts, header=str(base.header).lower(), inferSchema="false").csv(uris)
        else:
            df = load_columnar(spark, uris, fmt)
            opts["typed"] = fmt != "json"  # Parquet/ORC carry their own types: string columns stay strings
            if fmt == "parquet":
                opts["units"] = parquet_units(inputs[0]["path"])
    types = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    names = list(types)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PipelineError(f"{src.paths[0]}: the header names column {dupes[0]!r} {names.count(dupes[0])} times; "
                            "rename the duplicates so every column has its own name")
    from pyspark.sql import functions as F

    cast = [F.col(f"`{n}`").cast("string").alias(n) if t.startswith(("date", "timestamp")) else F.col(f"`{n}`")
            for n, t in types.items()]
    sample = df.select(*cast).limit(sample_rows).toPandas()
    share = spread_fraction(df, sample, sample_rows, None if src.table else inputs, fmt if not src.table else None)
    if share < 1.0:  # a larger input: a seeded sample over all of it, not its head (a sorted file's first
        # rows hold one month, one region, ...: a column that varies would look constant)
        # (no limit at the sample's size: Spark's limit stops at the first partitions that fill it)
        sample = df.select(*cast).sample(False, share, seed=0).limit(3 * sample_rows).toPandas().head(sample_rows)
    return sample, types, opts


def spread_fraction(df, head: pd.DataFrame, sample_rows: int, inputs: list[dict] | None, fmt: str | None) -> float:
    """The share of the input's rows a spread sample of about ``sample_rows`` takes (1.0: the head
    already holds every row, or nearly). Rows are counted from Parquet/ORC metadata or a catalog
    table, and estimated for text files from their bytes and the head's text length per row."""
    if len(head) < sample_rows:
        return 1.0  # the whole input is in the head
    if fmt in ("csv", "json") and inputs:
        per_row = sum(head[c].astype(str).str.len().sum() + len(head) for c in head.columns) / len(head)
        rows = sum(i["bytes"] for i in inputs) / max(per_row, 1.0)
    else:
        rows = df.count()  # columnar files and tables: from metadata
    return 1.0 if rows <= 1.5 * sample_rows else min(1.0, sample_rows / rows)


def parquet_units(path: str) -> dict[str, str]:
    """The timestamp columns a Parquet file stores in milliseconds, from its footer (Spark reads
    every timestamp as microseconds, so generate would write microseconds): {column: "ms"}. Only
    a local file's footer is read; on other stores timestamps are written in microseconds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if "://" in path:
        return {}
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException):
        return {}  # Spark's reader says what is wrong with the file
    return {f.name: "ms" for f in schema if pa.types.is_timestamp(f.type) and f.type.unit in ("s", "ms")}


def infer_schema(sample: pd.DataFrame, types: dict[str, str], options: dict | None = None) -> tuple[TableSchema, dict]:
    """The schema the rules give for a sample (``sample_table``'s output); also each column's why."""
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    missing = ""
    text_cols = [c for c, t in types.items() if t == "string"]
    if text_cols:  # the most frequent missing-value marker among the string cells, if any
        cells = pd.concat([sample[c].dropna().astype(str).str.strip() for c in text_cols])
        counts = cells[cells.isin([m for m in _MISSING if m])].value_counts()
        missing = counts.index[0] if len(counts) else ""
    cols, why = [], {}
    for name, t in types.items():
        values = sample[name]
        if t == "string" and missing:
            values = values.where(values.astype(str).str.strip() != missing)
        col, reason = infer_column(name, values, t, typed=bool(opts.get("typed")))
        unit = (opts.get("units") or {}).get(name)
        if unit and base_dtype(col.dtype) in ("timestamp", "timestamp_ltz"):  # the Parquet file's own unit
            col = dataclasses.replace(col, dtype=f"{col.dtype}[{unit}]")
            reason += f", in {unit}"
        cols.append(col)
        why[name] = reason
    kw = {k: opts[k] for k in ("separator", "header", "quote", "escape", "encoding", "multi_line") if k in opts}
    schema = TableSchema(columns=tuple(cols), missing_token=missing, comment_prefix="", **kw)
    return schema, why


def apply_overrides(schema: TableSchema, overrides: dict[str, str], sample: pd.DataFrame | None = None,
                    types: dict[str, str] | None = None) -> TableSchema:
    """``data.columns: {zip: categorical}``: single kinds replaced, checked against the sample."""
    by_name = {c.name: c for c in schema.columns}
    for name, kind in (overrides or {}).items():
        if name not in by_name:
            raise PipelineError(f"data.columns.{name}: no such column (columns: {schema.names[:20]})")
        old = by_name[name]
        dtype = _KIND_DTYPE.get(kind, old.dtype if base_dtype(old.dtype) in ("int", "float", "string", "decimal")
                                else "string")
        if kind == "datetime" and base_dtype(old.dtype) in ("timestamp", "timestamp_ltz"):
            dtype = old.dtype  # the zone kind stays
        if kind == "continuous" and dtype == "string":
            dtype = "float"
        by_name[name] = dataclasses.replace(old, kind=kind, dtype=dtype,
                                            format=old.format if kind in ("date", "datetime") else None)
    out = dataclasses.replace(schema, columns=tuple(by_name[c.name] for c in schema.columns))
    out.check("data.columns")
    if sample is not None:
        check_against(out, sample, types or {}, only=set(overrides or {}))
    return out


def check_against(schema: TableSchema, sample: pd.DataFrame, types: dict[str, str], only: set | None = None) -> None:
    """Fail with the first declared column the sample contradicts."""
    for c in schema.columns:
        if (only is None or c.name in only) and c.name in sample.columns:
            values = sample[c.name]
            if types.get(c.name, "string") == "string" and schema.missing_token:
                values = values.where(values.astype(str).str.strip() != schema.missing_token)
            problem = check_declared(c, values, types.get(c.name, "string"))
            if problem:
                raise PipelineError(f"{problem}; fix the kind in the schema file or data.columns")


def format_table(schema: TableSchema, why: dict | None = None) -> str:
    """The schema as a printed table: column, kind, dtype, why."""
    rows = [(c.name, c.kind, c.dtype + (f" ({c.format})" if c.format else ""), (why or {}).get(c.name, ""))
            for c in schema.columns]
    widths = [max(len(r[i]) for r in rows + [("column", "kind", "dtype", "")]) for i in range(3)]
    lines = [f"{'column':<{widths[0]}}  {'kind':<{widths[1]}}  {'dtype':<{widths[2]}}  why"]
    lines += [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]
    return "\n".join(lines)


def resolve_schema(spark, source, name: str, work_dir: Path, *, schema_path: str | None = None,
                   overrides: dict | None = None, options: dict | None = None, reinfer: bool = False,
                   sample_rows: int = SAMPLE_ROWS) -> TableSchema:
    """The schema for ``source``: ``schema_path`` if given, else ``<work>/schemas/<name>.yaml`` if
    an earlier run wrote it (and ``reinfer`` is off), else inferred now and written there. The
    schema is printed as a table; overrides apply on top and are checked against the data."""
    from gen_pipeline.kinds.table.sources import TableSource
    from gen_pipeline.layout import RunLayout

    source = source if isinstance(source, TableSource) else TableSource.of(source)
    saved = RunLayout(Path(work_dir), name).schema_file
    sample = types = None
    why = None
    if schema_path:
        schema = TableSchema.from_yaml(schema_path)
        origin = str(schema_path)
    elif saved.is_file() and not reinfer:
        schema = TableSchema.from_yaml(saved)
        origin = f"{saved} (inferred earlier; edit it, or set data.reinfer=true)"
    else:
        sample, types, opts = sample_table(spark, source, options, sample_rows)
        schema, why = infer_schema(sample, types, opts)
        saved.parent.mkdir(parents=True, exist_ok=True)
        part = saved.with_name(f".{saved.name}.part")
        part.write_text(schema.to_yaml(f"Schema of {name}, inferred from {len(sample):,} records sampled from "
                                       f"{', '.join(map(str, source.paths))}.\n"
                                       "Edit kinds here (continuous, categorical, boolean, datetime, date, "
                                       "identifier, constant, text, label); the next preprocess uses this file."))
        part.replace(saved)
        origin = f"{saved} (inferred now from {len(sample):,} records; edit it to change a kind)"
        for c in schema.columns:
            if c.kind == "text":
                print(f"[schema] warning: column {c.name} looks like free text and is left out of the model",
                      file=sys.stderr, flush=True)
            if c.kind == "constant" and why.get(c.name, "").startswith("no value"):
                print(f"[schema] warning: column {c.name} has no value in the sample; it is kept as an all-null "
                      "column", file=sys.stderr, flush=True)
    if overrides:
        if sample is None:
            sample, types, _ = sample_table(spark, source, options, sample_rows)
        schema = apply_overrides(schema, overrides, sample, types)
    print(f"[schema] {origin}\n{format_table(schema, why)}", flush=True)
    return schema


def source_table(cfg, spark, work_dir: Path):
    """The ``RawTable`` for ``data.source``: its files, its schema (given, saved or inferred now,
    see ``resolve_schema``) and how to read it. A ``--target`` column that was inferred as a
    number becomes categorical (train-on-synthetic evaluation predicts classes)."""
    from gen_pipeline.kinds.table.datasets import RawTable
    from gen_pipeline.kinds.table.sources import TableSource

    d = cfg.data
    src = TableSource.of(d.source, d.format, d.csv_options())
    schema = resolve_schema(spark, src, cfg.name, work_dir, schema_path=d.schema_path,
                            overrides=dict(d.columns), options=d.csv_options(), reinfer=d.reinfer)
    target = cfg.evaluate.tstr_label
    if target is not None:
        kinds = {c.name: c.kind for c in schema.columns}
        if target not in kinds:
            raise PipelineError(f"--target {target}: no such column (columns: {schema.names[:20]})")
        if kinds[target] not in ("categorical", "boolean") and target not in d.columns:
            schema = apply_overrides(schema, {target: "categorical"})
            print(f"[schema] {target}: categorical (the --target column)", flush=True)
    return RawTable(cfg.name, tuple(Path(p) if "://" not in p and not p.startswith("table:") else p
                                    for p in src.paths), schema, src)

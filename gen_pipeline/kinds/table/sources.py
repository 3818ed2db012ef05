"""Tables in, through Spark's own readers: any CSV, Parquet, ORC or JSON-lines table on a store
Spark reads, or a catalog table.

A ``TableSource`` names where the table is: a local path, a ``file://`` URI or any Hadoop
filesystem URI (``s3a://``, ``hdfs://``, ``gs://``, ``abfss://``: the cluster must provide the
connector jars and credentials, since pyspark ships none; the tests use local paths), a folder
(every file under it but ``_*`` and ``.*``), a glob, a list of them, or ``table:db.name``.
``read_table`` returns what preprocess works on: ``source`` (file name), ``line``, ``text`` (the
raw record, kept for rejected ones), the schema's typed columns and ``_reason`` (None for a
usable row), plus ``inputs`` from the
filesystem listing (path, size, modification time; the bytes are never read on the driver; for a
catalog table, the files ``spark.table(name).inputFiles()`` names, ``table_listing``).

How each format is read:

- CSV (UTF-8, one record per line; the default) and JSON lines: Spark's text source numbers the
  lines exactly (``line`` is the 1-based line of the file and ``text`` the line itself), then
  Spark's own CSV/JSON parser (``from_csv``/``from_json``, PERMISSIVE with a corrupt-record
  column, the schema given explicitly, every field as a string) splits each line: RFC 4180
  quoting (a quoted comma, ``""`` inside quotes) as the CSV reader does it.
- CSV with ``multi_line`` (a quoted field may hold a line break) or another encoding:
  ``DataFrameReader.csv`` reads whole files (not split across tasks); ``line`` is the record's
  ordinal among the file's records and ``text`` the record as JSON (the raw text for a corrupt one).
- Parquet, ORC: ``DataFrameReader``; ``line`` is the row's ordinal in the file, ``text`` the row
  as JSON. A missing column or an unreadable file is a one-line error naming the file.
- A catalog table: ``spark.table``; ``line`` and ``source`` are null.

On top of the reader, one validation pass over every field (Arrow kernels, no Python per row)
keeps the guarantees the reader lacks by itself in PERMISSIVE mode: a record with the wrong
field count, a non-number in a numeric column, NaN/Infinity, an unparseable date, boolean or
timestamp, or binary bytes get a reason and go to quarantine; rows in = written + quarantined.
Value cleaning is declared in the schema (``missing_token``, ``comment_prefix``,
``strip_suffix``), never in code.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

from gen_pipeline.errors import PipelineError
from gen_pipeline.kinds.table.schema import TableSchema, base_dtype
from gen_pipeline.kinds.table.validation import (_BINARY, _CAST, _CORRUPT, SPARK_CAST, _parse_datetime, _spark_type,
                                                  validate, validate_into)

FORMATS = ("csv", "parquet", "orc", "json")
_EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".data": "csv", ".test": "csv", ".parquet": "parquet",
               ".pq": "parquet", ".orc": "orc", ".json": "json", ".jsonl": "json", ".ndjson": "json"}


@dataclass(frozen=True)
class TableSource:
    """Where a table is and how to read it (``format`` None: by the first file's extension)."""

    paths: tuple[str, ...]
    format: str | None = None
    options: dict = field(default_factory=dict)  # CSV reader overrides: header, delimiter, quote, ...

    @classmethod
    def of(cls, source, format: str | None = None, options: dict | None = None) -> "TableSource":
        paths = (source,) if isinstance(source, (str, Path)) else tuple(source)
        if not paths:
            raise PipelineError("data.source: no path given")
        return cls(tuple(str(p) for p in paths), format, dict(options or {}))

    @property
    def table(self) -> str | None:
        """The catalog table's name for ``table:db.name``."""
        return self.paths[0][len("table:"):] if self.paths[0].startswith("table:") else None

    def resolved_format(self, files: list[str] | None = None) -> str:
        if self.format:
            if self.format not in FORMATS:
                raise PipelineError(f"data.format: {self.format!r} is not one of {', '.join(FORMATS)}")
            return self.format
        for p in list(files or ()) + list(self.paths):
            name = p.rstrip("/").rsplit("/", 1)[-1].lower()
            for codec in (".gz", ".bz2", ".zst", ".lz4", ".snappy", ".deflate"):  # Spark reads these compressed
                name = name.removesuffix(codec)
            ext = "." + name.rsplit(".", 1)[-1] if "." in name else ""
            if ext in _EXTENSIONS:
                return _EXTENSIONS[ext]
        raise PipelineError(f"{self.paths[0]}: cannot tell the format from the file name; "
                            f"set data.format to one of {', '.join(FORMATS)}")

    def name(self) -> str:
        """A valid run name from the first path's stem (``my table.csv`` -> ``my_table``)."""
        import re

        stem = self.table or Path(self.paths[0].rstrip("/")).name.split(".")[0]
        return re.sub(r"[^A-Za-z0-9_\-]+", "_", stem).strip("_") or "table"


def with_options(schema: TableSchema, options: dict) -> TableSchema:
    """The schema with reading options overridden (``data.header``, ``data.delimiter``, ...)."""
    import dataclasses

    names = {"delimiter": "separator", "sep": "separator", "multiLine": "multi_line", "multiline": "multi_line"}
    update = {names.get(k, k): v for k, v in options.items() if v is not None}
    unknown = set(update) - {f.name for f in dataclasses.fields(schema)} - {"columns"}
    if unknown:
        raise PipelineError(f"data: unknown CSV option(s) {sorted(unknown)}")
    return dataclasses.replace(schema, **update)


# ---------------------------------------------------------------------------------------------
# The listing: Hadoop's FileSystem API through the JVM (any store Spark reads), no bytes read.
# ---------------------------------------------------------------------------------------------
def _hadoop_path(spark, p: str):
    if "://" not in p and not p.startswith("file:"):
        p = "file://" + str(Path(p).expanduser().absolute())
    return spark._jvm.org.apache.hadoop.fs.Path(p)


def _local(uri: str) -> str:
    """A ``file:`` URI back to a plain local path (messages and the manifest read better)."""
    from urllib.parse import unquote

    return "/" + unquote(uri[len("file:"):]).lstrip("/") if uri.startswith("file:") else uri


def list_inputs(spark, paths) -> list[dict]:
    """Every input file behind ``paths`` (files, folders, globs): path, size, modification time.

    A path that matches nothing, or an empty file named directly, is a one-line error; inside a
    folder, hidden (``.``/``_``) and empty files are skipped (Spark writes ``_SUCCESS`` and may
    write empty parts).
    """
    conf = spark._jsc.hadoopConfiguration()
    out = []
    for p in paths:
        hp = _hadoop_path(spark, str(p))
        try:
            fs = hp.getFileSystem(conf)
            statuses = fs.globStatus(hp)
        except Exception as e:  # no connector for the scheme, no credentials, ...
            raise PipelineError(f"{p}: cannot list ({str(e).splitlines()[0][:200]}); check the URI and that the "
                                "cluster has the filesystem's connector") from None
        if not statuses:
            raise PipelineError(f"{p}: input file not found; fetch the dataset or pass an existing file")
        for st in statuses:
            if st.isDirectory():
                it = fs.listFiles(st.getPath(), True)
                found = []
                while it.hasNext():
                    f = it.next()
                    rel = str(f.getPath().toUri().getPath())[len(str(st.getPath().toUri().getPath())):]
                    if f.getLen() > 0 and not any(part.startswith((".", "_")) for part in rel.split("/") if part):
                        found.append(f)
                if not found:
                    raise PipelineError(f"{p}: the folder holds no data files")
                statuses_here = sorted(found, key=lambda f: str(f.getPath()))
            else:
                if st.getLen() == 0:
                    raise PipelineError(f"{_local(str(st.getPath()))}: the input file is empty; nothing to read")
                statuses_here = [st]
            for f in statuses_here:
                out.append({"path": _local(str(f.getPath())), "uri": str(f.getPath()), "bytes": int(f.getLen()),
                            "modified": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                      time.gmtime(f.getModificationTime() / 1000))})
    seen, unique = set(), []
    for i in out:
        if i["uri"] not in seen:
            seen.add(i["uri"])
            unique.append(i)
    return unique


def table_listing(spark, name: str) -> dict:
    """A catalog table as one input: ``path`` ``table:NAME``, its files' total ``bytes`` and
    latest ``modified`` time, and ``files``, each file's path, size and modification time from
    the Hadoop FileSystem (the table's metadata is refreshed first, so files written since the
    session listed them count). The fingerprint reads the files, so rewriting, appending to or
    replacing the table changes it. A table with no files behind it (a view, an in-memory
    table) is fingerprinted by its name only."""
    conf = spark._jsc.hadoopConfiguration()
    try:
        spark.catalog.refreshTable(name)
        uris = sorted(spark.table(name).inputFiles())
    except Exception as e:  # no such table, or a catalog that cannot be reached
        raise PipelineError(f"table {name}: cannot read it ({_first_line(e)}); check the name (db.table) and the "
                            "session's catalog") from None
    wanted = {_local(u) for u in uris}  # file:/x and file:///x alike
    statuses = {}
    for folder in sorted({u.rsplit("/", 1)[0] for u in uris}):  # one listing per folder, not a call per file
        hp = spark._jvm.org.apache.hadoop.fs.Path(folder)
        for st in hp.getFileSystem(conf).listStatus(hp):
            if _local(str(st.getPath())) in wanted:
                statuses[_local(str(st.getPath()))] = st
    files = []
    for uri in uris:
        if _local(uri) not in statuses:  # named otherwise by the listing (an escaped character): its own status
            hp = spark._jvm.org.apache.hadoop.fs.Path(uri)
            statuses[_local(uri)] = hp.getFileSystem(conf).getFileStatus(hp)
        st = statuses[_local(uri)]
        files.append({"path": _local(uri), "bytes": int(st.getLen()),
                      "modified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.getModificationTime() / 1000))})
    return {"path": f"table:{name}", "bytes": sum(f["bytes"] for f in files) if files else None,
            "modified": max(f["modified"] for f in files) if files else None, "files": files}


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def _numbered(df, first_of: str | None = None):
    """``df`` (any file source) with ``source`` (file name) and ``line``: the record's 1-based
    ordinal in its file, without a Python pass. Each input split's records are contiguous in one
    partition, so a record's number is the records of the earlier splits of its file (ordered by
    byte offset) plus its position in its split (``monotonically_increasing_id``'s low bits).
    One small aggregate (a row per split) reaches the driver; with ``first_of`` it also brings
    each file's first value of that column (a CSV header), in the same pass: returns
    (DataFrame, {file name: first value})."""
    from pyspark.sql import functions as F

    raw = df.select("*", F.col("_metadata.file_path").alias("__path"),
                    F.col("_metadata.file_name").alias("source"),
                    F.col("_metadata.file_block_start").alias("__block"),
                    F.monotonically_increasing_id().alias("__mid"))
    aggs = [F.count(F.lit(1)).alias("n"), F.min("__mid").alias("first")]
    if first_of:
        aggs += [F.min_by(first_of, "__mid").alias("head"), F.first("source").alias("name")]
    splits = raw.groupBy("__path", "__block").agg(*aggs).collect()
    bases, seen = [], {}
    for r in sorted(splits, key=lambda r: (r["__path"], r["__block"])):
        before = seen.get(r["__path"], 0)
        bases.append((r["__path"], r["__block"], before - r["first"] + 1))
        seen[r["__path"]] = before + r["n"]
    base = df.sparkSession.createDataFrame(bases, "__path string, __block bigint, __base bigint")
    if first_of:
        heads = {r["name"]: r["head"] for r in splits if r["__block"] == 0}
        return raw.join(F.broadcast(base), ["__path", "__block"]).withColumn("line", F.col("__mid") + F.col("__base")) \
            .drop("__path", "__block", "__mid", "__base"), heads
    return raw.join(F.broadcast(base), ["__path", "__block"]).withColumn("line", F.col("__mid") + F.col("__base")) \
        .drop("__path", "__block", "__mid", "__base")


def _csv_options(schema: TableSchema) -> dict:
    return {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT, "sep": schema.separator,
            "quote": schema.quote, "escape": schema.escape, "ignoreLeadingWhiteSpace": "true",
            "ignoreTrailingWhiteSpace": "true", "nullValue": "", "encoding": schema.encoding,
            "multiLine": str(schema.multi_line).lower(), "enforceSchema": "true"}


def _string_ddl(schema: TableSchema) -> str:
    return ", ".join(f"`{c.name}` string" for c in schema.columns) + f", `{_CORRUPT}` string"


def _split_header(text: str, schema: TableSchema) -> list[str]:
    return next(csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=schema.separator,
                           quotechar=schema.quote or '"', skipinitialspace=True), [])


def check_header(names: list[str], schema: TableSchema, where: str) -> None:
    """A header must name the schema's columns, in order, each once."""
    names = [n.strip() for n in names]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PipelineError(f"{where}: the header names column {dupes[0]!r} {names.count(dupes[0])} times; "
                            "rename the duplicates so every column has its own name")
    if names != schema.names:
        missing = [n for n in schema.names if n not in names]
        extra = [n for n in names if n not in schema.names]
        what = (f"has no column {missing[0]!r}" if missing else f"has a column {extra[0]!r} the schema lacks"
                if extra else "orders the columns differently")
        raise PipelineError(f"{where}: the header {what} (header: {names[:20]}; schema: {schema.names[:20]}); "
                            "pass the schema that matches this file (data.schema) or re-infer it")


def _line_records(spark, uris: list[str], schema: TableSchema, fmt: str, max_rows_per_file: int | None):
    """Text-source lines, numbered, header/blank/comment lines dropped, parsed by Spark's CSV or
    JSON parser into string fields plus the corrupt-record column."""
    from pyspark.sql import functions as F

    lines, heads = _numbered(spark.read.text(uris), first_of="value")
    lines = lines.withColumnRenamed("value", "text")
    lines = lines.withColumn("text", F.when(F.col("line") == 1, F.regexp_replace("text", "^\ufeff", ""))
                             .otherwise(F.col("text")))  # a byte-order mark is not data
    # Bytes that are not UTF-8 (a binary file named .csv): flagged, then made valid text to carry on.
    lines = lines.withColumn(_BINARY, F.expr("NOT is_valid_utf8(text)")) \
        .withColumn("text", F.expr("make_valid_utf8(text)"))
    first = 2 if schema.header and fmt == "csv" else 1
    if first == 2:
        for name, head in sorted(heads.items()):  # the first line of each file, from the numbering's pass
            check_header(_split_header(head or "", schema), schema, name)
    lines = lines.where(F.col("line") >= first)
    if max_rows_per_file:
        lines = lines.where(F.col("line") < first + max_rows_per_file)
    stripped = F.trim(F.regexp_replace("text", "\r$", ""))
    is_data = stripped != ""
    if schema.comment_prefix:
        is_data = is_data & ~stripped.startswith(schema.comment_prefix)
    lines = lines.where(is_data)
    if fmt == "csv":
        parsed = F.from_csv("text", _string_ddl(schema), _csv_options(schema))
    else:
        parsed = F.from_json("text", _string_ddl(schema), {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT})
    return lines.select("source", "line", "text", _BINARY, parsed.alias("__r")) \
        .select("source", "line", "text", "__r.*", _BINARY)


def _reader_records(spark, uris: list[str], schema: TableSchema, fmt: str, max_rows_per_file: int | None):
    """Whole-file reads (multi-line or non-UTF-8 CSV, Parquet, ORC): every schema column as a
    string (the validation pass types it), ``text`` the record as JSON."""
    from pyspark.sql import functions as F

    reader = spark.read
    if fmt == "csv":
        df = reader.options(**_csv_options(schema), header=str(schema.header).lower()) \
            .schema(_string_ddl(schema)).csv(uris)
        if schema.header:
            heads = spark.read.options(**_csv_options(schema), header="true").csv(uris[:1]).columns
            check_header([h for h in heads if h != _CORRUPT], schema, _local(uris[0]).rsplit("/", 1)[-1])
    else:
        df = load_columnar(spark, uris, fmt)
        for c in schema.columns:
            if c.name not in df.columns:
                raise PipelineError(f"{_local(uris[0])}: column {c.name!r} not found (the {fmt} files have "
                                    f"{df.columns[:20]}); pass a schema that matches them")
    records = _numbered(df)
    if max_rows_per_file:
        records = records.where(F.col("line") <= max_rows_per_file)
    text = F.to_json(F.struct(*[F.col(f"`{c.name}`") for c in schema.columns]))
    if fmt == "csv":
        text = F.coalesce(F.col(_CORRUPT), text)
        corrupt = F.col(_CORRUPT)
    else:
        corrupt = F.lit(None).cast("string")
    return records.select("source", "line", text.alias("text"),
                          *[F.col(f"`{c.name}`").cast("string").alias(c.name) for c in schema.columns],
                          corrupt.alias(_CORRUPT), F.lit(False).alias(_BINARY))


def load_columnar(spark, uris: list[str], fmt: str):
    """``DataFrameReader`` over Parquet/ORC/JSON files; a file it cannot read is one line naming it."""
    try:
        df = spark.read.format(fmt).load(uris)
        df.schema  # noqa: B018 - reads the footers now: an unreadable file fails here, by name
    except Exception as e:
        hint = ("a nanosecond timestamp (as pandas writes by default): rewrite it with "
                "coerce_timestamps='us'" if "NANOS" in str(e) else
                f"check that the file is complete and really is {fmt}")
        raise PipelineError(f"{_named_file(e, uris)}: not a readable {fmt} file ({_first_line(e)}); {hint}") from None
    return df


def _first_line(e: Exception) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:200]


def _named_file(e: Exception, uris: list[str]) -> str:
    text = str(e)
    for u in uris:
        if u in text or _local(u) in text:
            return _local(u)
    return ", ".join(_local(u) for u in uris[:3]) + (" ..." if len(uris) > 3 else "")


def read_table(spark, source, schema: TableSchema, max_rows_per_file: int | None = None):
    """Every record of ``source`` (a ``TableSource``, or paths) typed by ``schema``, plus ``_reason``
    (None = usable), and the input files from the listing: returns (DataFrame of source, line,
    text (rejected records only), the columns, _reason; inputs)."""
    records, check, inputs = read_records(spark, source, schema, max_rows_per_file)
    return check(records), inputs


def read_records(spark, source, schema: TableSchema, max_rows_per_file: int | None = None):
    """``read_table`` in two steps: (records as the reader split them, every field a string, with
    Spark's casts beside them; the validation pass, a function of such records (and optionally
    the fit's summaries to make on the way, and ``into``, a folder: then run now and written
    there, ``validation.validate_into``) that passes through any column added to them; inputs).
    Preprocess assigns the split from the raw text in between, so the text need not come back
    from the validation for usable records."""
    from pyspark.sql import functions as F

    src = source if isinstance(source, TableSource) else TableSource.of(source)
    if src.table:
        fmt_used = "table"
        inputs = [table_listing(spark, src.table)]  # also a one-line error for a table that is not there
        df = spark.table(src.table)
        missing = [c.name for c in schema.columns if c.name not in df.columns]
        if missing:
            raise PipelineError(f"table {src.table}: column {missing[0]!r} not found; pass a schema that matches it")
        records = df.select(F.lit(None).cast("string").alias("source"), F.lit(None).cast("bigint").alias("line"),
                            F.to_json(F.struct(*[F.col(f"`{c.name}`") for c in schema.columns])).alias("text"),
                            *[F.col(f"`{c.name}`").cast("string").alias(c.name) for c in schema.columns],
                            F.lit(None).cast("string").alias(_CORRUPT), F.lit(False).alias(_BINARY))
        if max_rows_per_file:
            records = records.limit(max_rows_per_file)
    else:
        inputs = list_inputs(spark, src.paths)
        fmt = fmt_used = src.resolved_format([i["path"] for i in inputs])
        schema = with_options(schema, src.options) if src.options else schema
        uris = [i["uri"] for i in inputs]
        line_oriented = fmt == "json" or (fmt == "csv" and not schema.multi_line
                                          and schema.encoding.upper().replace("-", "") == "UTF8")
        records = (_line_records if line_oriented else _reader_records)(spark, uris, schema, fmt, max_rows_per_file)
        for i in inputs:
            del i["uri"]
    casts = [F.expr(f"try_cast(`{c.name}` AS {_spark_type(c)})").alias(_CAST + c.name)
             if not c.format else _parse_datetime(c).alias(_CAST + c.name)
             for c in schema.columns if base_dtype(c.dtype) in SPARK_CAST]
    fmt_used = "json" if fmt_used == "json" else "csv"

    def check(df, summaries=None, into=None):
        if into is None:
            return validate(df, schema, fmt_used, summaries)
        return validate_into(df, schema, fmt_used, str(into), summaries)
    return records.select("*", *casts), check, inputs

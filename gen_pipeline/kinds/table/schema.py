"""Table schemas: each column's kind and type, how its raw files are read (Spark's readers, in
``sources.py``), written to and read from the editable YAML file a user keeps."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal


# A ``label`` column (e.g. an anomaly flag) is read, validated and carried through scoring, but
# never modelled or generated. ``boolean``, ``datetime`` and ``date`` are modelled and regenerated
# in their own type; an ``identifier`` (unique per row) is not modelled but regenerated as new
# unique values; a ``constant`` is regenerated as its one value; free ``text`` is left out.
# (How kinds are inferred from data: gen_pipeline.kinds.table.inference.)
Kind = Literal["continuous", "categorical", "label", "boolean", "datetime", "date", "identifier", "constant", "text"]
# Column types, read, validated and generated as such. ``timestamp`` is a wall-clock time with no
# zone (Spark TIMESTAMP_NTZ, Arrow timestamp[us]); ``timestamp_ltz`` an instant (Spark TIMESTAMP,
# Arrow timestamp[us, tz=UTC]; Parquet's isAdjustedToUTC); either with ``[ms]`` is stored in
# milliseconds where the output is written by Arrow (a Parquet input's unit; Spark itself holds
# microseconds); ``decimal(p,s)`` a fixed-point number of precision p and scale s (Spark
# DecimalType, Arrow decimal128), generated at that scale.
DType = Literal["int", "float", "string", "bool", "date", "timestamp", "timestamp_ltz", "timestamp[ms]",
                "timestamp_ltz[ms]", "decimal(p,s)"]
# Columns the transformer encodes for a model; identifiers and constants are regenerated without it.
ENCODED_KINDS = ("continuous", "categorical", "boolean", "datetime", "date")

_SPARK_TYPES = {"int": "bigint", "float": "double", "string": "string", "bool": "boolean", "date": "date",
                "timestamp": "timestamp_ntz", "timestamp_ltz": "timestamp"}
_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")
TIMESTAMPS = ("timestamp", "timestamp_ltz")


_TIMESTAMP = re.compile(r"^(timestamp|timestamp_ltz)(?:\[(ms|us)\])?$")


def decimal_of(dtype: str) -> tuple[int, int] | None:
    """(precision, scale) of a ``decimal(p,s)`` dtype; None for any other."""
    m = _DECIMAL.match(dtype or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def timestamp_unit(dtype: str) -> str | None:
    """``ms`` or ``us`` for a timestamp dtype (``us`` unless it says ``[ms]``); None for any other."""
    m = _TIMESTAMP.match(dtype or "")
    return (m.group(2) or "us") if m else None


def base_dtype(dtype: str) -> str:
    """``decimal`` for any ``decimal(p,s)``, a timestamp dtype without its unit, else the dtype."""
    if decimal_of(dtype):
        return "decimal"
    m = _TIMESTAMP.match(dtype or "")
    return m.group(1) if m else dtype


def spark_type(dtype: str) -> str:
    """A dtype's Spark SQL type name."""
    d = decimal_of(dtype)
    return f"decimal({d[0]},{d[1]})" if d else _SPARK_TYPES[base_dtype(dtype)]


def arrow_type(dtype: str, spark: bool = False):
    """A dtype's Arrow type (``spark``: as Spark exchanges it with Python, microsecond timestamps)."""
    import pyarrow as pa

    d = decimal_of(dtype)
    if d:
        return pa.decimal128(*d)
    unit = timestamp_unit(dtype)
    if unit:
        return pa.timestamp("us" if spark else unit, tz="UTC" if base_dtype(dtype) == "timestamp_ltz" else None)
    return {"int": pa.int64(), "float": pa.float64(), "string": pa.string(), "bool": pa.bool_(),
            "date": pa.date32()}[dtype]

REASON = "_reason"  # the reader's column for a row it cannot use (None when the row is good)


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    dtype: DType
    # datetime/date in text files: a Spark datetime pattern (e.g. "dd/MM/yyyy HH:mm"); None = ISO 8601.
    format: str | None = None


@dataclass(frozen=True)
class TableSchema:
    """Ordered columns of the raw table, with how raw text is read."""

    columns: tuple[Column, ...]
    separator: str = ","
    missing_token: str = "?"
    comment_prefix: str = "|"
    strip_suffix: str = ""  # e.g. Adult's test labels end with '.'
    header: bool = False  # the first line of each file names the columns
    # How Spark's CSV reader reads the files (gen_pipeline.kinds.table.sources); RFC 4180 by default.
    quote: str = '"'
    escape: str = '"'
    encoding: str = "UTF-8"
    multi_line: bool = False  # quoted fields may hold line breaks (files are then read whole, unsplit)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def model_columns(self) -> tuple[Column, ...]:
        """The columns generated (everything but labels and free text; identifiers and constants are
        regenerated without being learned, see ``encoded_columns``)."""
        return tuple(c for c in self.columns if c.kind not in ("label", "text"))

    @property
    def encoded_columns(self) -> tuple[Column, ...]:
        """The columns a model learns."""
        return tuple(c for c in self.columns if c.kind in ENCODED_KINDS)

    @property
    def label_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == "label"]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["columns"] = [asdict(c) for c in self.columns]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TableSchema":
        return cls(**{**d, "columns": tuple(Column(**c) for c in d["columns"])})

    def spark_ddl(self, model_only: bool = False) -> str:
        """Spark DDL of the original schema (integers are longs, categories strings)."""
        cols = self.model_columns if model_only else self.columns
        return ", ".join(f"`{c.name}` {spark_type(c.dtype)}" for c in cols)

    def arrow_schema(self, model_only: bool = False, spark: bool = False):
        """The Arrow schema of the original columns (``spark``: as Spark exchanges it with Python)."""
        import pyarrow as pa

        cols = self.model_columns if model_only else self.columns
        return pa.schema([pa.field(c.name, arrow_type(c.dtype, spark)) for c in cols])

    def to_yaml(self, title: str = "") -> str:
        """The schema as an editable YAML file: reading options, then one line per column."""
        import yaml

        d = {k: v for k, v in self.to_dict().items() if k != "columns"}
        head = "".join(f"# {line}\n" for line in title.splitlines())
        body = yaml.safe_dump(d, sort_keys=False, allow_unicode=True) if d else ""
        cols = "".join("  - " + yaml.safe_dump({k: v for k, v in asdict(c).items() if v is not None},
                                               default_flow_style=True, sort_keys=False, width=1000)
                       for c in self.columns)
        return f"{head}{body}columns:\n{cols}"

    @classmethod
    def from_yaml(cls, path) -> "TableSchema":
        """Read a schema file (``to_yaml``'s format); a mistake is one line naming the file."""
        from pathlib import Path

        import yaml

        from gen_pipeline.errors import PipelineError

        path = Path(path)
        if not path.is_file():
            raise PipelineError(f"{path}: schema file not found")
        try:
            d = yaml.safe_load(path.read_text()) or {}
            d["columns"] = tuple(Column(**c) for c in d.get("columns") or ())
            schema = cls(**d)
        except (yaml.YAMLError, TypeError, AttributeError) as e:
            raise PipelineError(f"{path}: not a valid schema file ({str(e).splitlines()[0]}); "
                                "expected options and a `columns:` list of {name, kind, dtype}") from None
        schema.check(str(path))
        return schema

    def check(self, where: str) -> None:
        """Kinds and dtypes are known, names unique, each kind with a dtype it can have."""
        from typing import get_args

        from gen_pipeline.errors import PipelineError

        if not self.columns:
            raise PipelineError(f"{where}: the schema has no columns")
        seen = set()
        allowed = {"continuous": ("int", "float", "decimal"), "boolean": ("bool",), "datetime": TIMESTAMPS,
                   "date": ("date",), "categorical": ("int", "float", "decimal", "string", "bool", "date", *TIMESTAMPS)}
        for c in self.columns:
            if c.name in seen:
                raise PipelineError(f"{where}: column {c.name!r} appears twice; rename one")
            seen.add(c.name)
            if c.kind not in get_args(Kind):
                raise PipelineError(f"{where}: column {c.name}: unknown kind {c.kind!r} (one of {get_args(Kind)})")
            if not isinstance(c.dtype, str) or base_dtype(c.dtype) not in (*_SPARK_TYPES, "decimal"):
                raise PipelineError(f"{where}: column {c.name}: unknown dtype {c.dtype!r} (one of {get_args(DType)})")
            d = decimal_of(c.dtype)
            if d and not (1 <= d[0] <= 38 and d[1] <= d[0]):
                raise PipelineError(f"{where}: column {c.name}: {c.dtype} needs 1 <= precision <= 38 and scale <= "
                                    "precision")
            if c.kind in allowed and base_dtype(c.dtype) not in allowed[c.kind]:
                raise PipelineError(f"{where}: column {c.name}: kind {c.kind} needs dtype "
                                    f"{' or '.join(allowed[c.kind])}, not {c.dtype}")

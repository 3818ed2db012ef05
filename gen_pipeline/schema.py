"""Table schemas and the parser that turns raw text lines into typed rows or quarantine reasons.

The parser is pure pandas so unit tests reach it without Spark; preprocess and score run it
inside Spark's ``mapInPandas``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import pandas as pd

# A ``label`` column (e.g. an anomaly flag) is read, validated and carried through scoring, but
# never modelled or generated.
Kind = Literal["continuous", "categorical", "label"]
DType = Literal["int", "float", "string"]

REASON = "_reason"  # column the parser fills for a row it cannot use (None when the row is good)


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    dtype: DType


@dataclass(frozen=True)
class TableSchema:
    """Ordered columns of the raw table, with how raw text is read."""

    columns: tuple[Column, ...]
    separator: str = ","
    missing_token: str = "?"
    comment_prefix: str = "|"
    strip_suffix: str = ""  # e.g. Adult's test labels end with '.'
    header: bool = False  # the first line of each file names the columns

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def model_columns(self) -> tuple[Column, ...]:
        """The columns a model learns and generates (everything but labels)."""
        return tuple(c for c in self.columns if c.kind != "label")

    @property
    def label_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == "label"]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["columns"] = [asdict(c) for c in self.columns]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TableSchema":
        return cls(**{**d, "columns": tuple(Column(**c) for c in d["columns"])})

    def spark_ddl(self, model_only: bool = False) -> str:
        """Spark DDL of the original schema (integers are longs, categories strings)."""
        types = {"int": "bigint", "float": "double", "string": "string"}
        cols = self.model_columns if model_only else self.columns
        return ", ".join(f"`{c.name}` {types[c.dtype]}" for c in cols)

    def arrow_schema(self, model_only: bool = False):
        import pyarrow as pa

        types = {"int": pa.int64(), "float": pa.float64(), "string": pa.string()}
        cols = self.model_columns if model_only else self.columns
        return pa.schema([pa.field(c.name, types[c.dtype]) for c in cols])



def _is_skippable(text: str, schema: TableSchema) -> bool:
    stripped = text.strip()
    return not stripped or (bool(schema.comment_prefix) and stripped.startswith(schema.comment_prefix))


def _parse_value(raw: str, col: Column, schema: TableSchema):
    """Returns (value, reason): reason is None when the value is usable."""
    value = raw.strip()
    if schema.strip_suffix and value.endswith(schema.strip_suffix) and col.dtype == "string":
        value = value[: -len(schema.strip_suffix)]
    if value == schema.missing_token or value == "":
        return None, None
    if col.dtype == "string":
        return value, None
    try:
        number = float(value)
    except ValueError:
        return None, f"column {col.name}: {value!r} is not a number"
    if not math.isfinite(number):
        return None, f"column {col.name}: {value!r} is not finite (NaN/inf are not data)"
    if col.dtype == "int":
        if number != int(number):
            return None, f"column {col.name}: {value!r} is not an integer"
        return int(number), None
    return number, None


def parse_lines(lines: pd.DataFrame, schema: TableSchema) -> pd.DataFrame:
    """Parse raw text lines into typed columns.

    ``lines`` has columns ``source`` (file), ``line`` (1-based line number) and ``text``.
    Returns the same rows with the schema's columns added and ``_reason`` set for rows that
    cannot be used (wrong field count, non-numeric, non-finite). Blank and comment lines are
    dropped here and counted by the caller from ``is_data_line``.
    """
    n_cols = len(schema.columns)
    values: dict[str, list] = {c.name: [] for c in schema.columns}
    reasons: list[str | None] = []
    for text in lines["text"].tolist():
        fields = text.split(schema.separator)
        if len(fields) != n_cols:
            reasons.append(f"expected {n_cols} fields separated by {schema.separator!r}, got {len(fields)}")
            for c in schema.columns:
                values[c.name].append(None)
            continue
        row_reasons = []
        for raw, col in zip(fields, schema.columns):
            value, reason = _parse_value(raw, col, schema)
            values[col.name].append(value)
            if reason:
                row_reasons.append(reason)
        reasons.append("; ".join(row_reasons) if row_reasons else None)
    out = lines[["source", "line", "text"]].reset_index(drop=True).copy()
    for c in schema.columns:
        series = pd.Series(values[c.name], dtype="object")
        if c.dtype == "int":
            series = pd.array(series.tolist(), dtype="Int64")
        elif c.dtype == "float":
            series = pd.to_numeric(series, errors="coerce").astype("float64")
        out[c.name] = series
    out[REASON] = pd.Series(reasons, dtype="object")
    return out


def is_data_line(text: str, schema: TableSchema) -> bool:
    return not _is_skippable(text, schema)

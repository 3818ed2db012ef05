"""Reversible, serialisable per-column encodings of a table (fitted from Spark aggregates).

Continuous columns: a quantile transform to a standard normal (robust to the heavy skew and
zero spikes of Adult's capital columns) or standardisation; a null indicator when the column had
nulls. Categorical columns: one-hot over the training vocabulary, missing as its own category.
The fitted state is a small versioned JSON (``transform_spec.json``) that travels with the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from gen_pipeline.errors import PipelineError
from gen_pipeline.schema import TableSchema

SPEC_VERSION = 1
SUPPORTED_SPEC_VERSIONS = (1,)
_EPS = 1e-6  # keeps ndtri finite at the ends of the quantile table


@dataclass(frozen=True)
class Span:
    """A slice of the encoded vector: ``continuous`` (one real) or ``categorical`` (a softmax)."""

    kind: str
    start: int
    end: int


# ---------------------------------------------------------------------------------------------
# Fitting from Spark aggregates: nothing but small summaries reaches the driver.
# ---------------------------------------------------------------------------------------------
def fit_spec(df, schema: TableSchema, method: str = "quantile", num_quantiles: int = 200) -> dict:
    """Fit every column's encoding from aggregates of a Spark DataFrame of typed rows."""
    from pyspark.sql import functions as F

    cont = [c for c in schema.model_columns if c.kind == "continuous"]
    probs = np.linspace(0.0, 1.0, num_quantiles + 1).tolist()
    aggs = [F.count(F.lit(1)).alias("__n")]
    for c in cont:
        col = F.col(c.name).cast("double")
        aggs += [
            F.min(col).alias(f"{c.name}__min"),
            F.max(col).alias(f"{c.name}__max"),
            F.avg(col).alias(f"{c.name}__mean"),
            F.stddev_pop(col).alias(f"{c.name}__std"),
            F.sum(F.col(c.name).isNull().cast("long")).alias(f"{c.name}__nulls"),
            F.percentile_approx(col, probs, 10_000).alias(f"{c.name}__q"),
        ]
    stats = df.agg(*aggs).first().asDict()
    n_rows = int(stats["__n"])
    if n_rows == 0:
        raise PipelineError("no usable rows to fit the transforms on (every row was quarantined?)")

    columns = []
    for c in schema.model_columns:
        if c.kind == "continuous":
            entry = {
                "name": c.name, "kind": c.kind, "dtype": c.dtype, "method": method,
                "min": float(stats[f"{c.name}__min"]), "max": float(stats[f"{c.name}__max"]),
                "mean": float(stats[f"{c.name}__mean"]),
                "std": float(stats[f"{c.name}__std"] or 0.0) or 1.0,
                "has_nulls": int(stats[f"{c.name}__nulls"]) > 0,
            }
            if method == "quantile":
                entry["quantiles"] = [float(v) for v in stats[f"{c.name}__q"]]
                entry["probs"] = probs
            columns.append(entry)
        else:
            counts = df.groupBy(c.name).count().collect()  # one row per category: bounded
            ordered = sorted(counts, key=lambda r: (-r["count"], "" if r[c.name] is None else r[c.name]))
            columns.append({
                "name": c.name, "kind": c.kind, "dtype": c.dtype,
                "categories": [r[c.name] for r in ordered],  # None is the missing category
                "frequencies": [r["count"] / n_rows for r in ordered],
            })
    return {"version": SPEC_VERSION, "schema": schema.to_dict(), "columns": columns, "fitted_rows": n_rows}


# ---------------------------------------------------------------------------------------------
# The transformer: pure numpy/pandas, used in Spark tasks and in the model's pyfunc.
# ---------------------------------------------------------------------------------------------
def _quantile_forward(x: np.ndarray, q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Value -> cumulative probability; ties in the quantile table map to their middle prob."""
    lo = np.searchsorted(q, x, side="left")
    hi = np.searchsorted(q, x, side="right")
    cum = np.concatenate([[0.0], np.cumsum(p)])
    tied = hi > lo
    u = np.empty_like(x, dtype=np.float64)
    u[tied] = (cum[hi[tied]] - cum[lo[tied]]) / (hi[tied] - lo[tied])
    # Strictly between two knots: linear between the last knot below and the first above.
    i = np.clip(lo[~tied], 1, len(q) - 1)
    x0, x1, p0, p1 = q[i - 1], q[i], p[i - 1], p[i]
    frac = np.where(x1 > x0, (x[~tied] - x0) / np.where(x1 > x0, x1 - x0, 1.0), 0.0)
    u[~tied] = p0 + np.clip(frac, 0.0, 1.0) * (p1 - p0)
    return u


class TableTransformer:
    """Encodes typed rows to float32 vectors and decodes vectors back to the original schema."""

    def __init__(self, spec: dict):
        version = spec.get("version")
        if version not in SUPPORTED_SPEC_VERSIONS:
            raise PipelineError(
                f"transform spec version {version!r} is not supported by this gen_pipeline "
                f"(supported: {SUPPORTED_SPEC_VERSIONS}); retrain the model or install a matching release"
            )
        self.spec = spec
        self.schema = TableSchema.from_dict(spec["schema"])
        self.columns = spec["columns"]
        self.spans: list[Span] = []
        self._layout: list[tuple[dict, int]] = []  # (column spec, start offset)
        offset = 0
        for col in self.columns:
            self._layout.append((col, offset))
            if col["kind"] == "continuous":
                self.spans.append(Span("continuous", offset, offset + 1))
                offset += 1
                if col["has_nulls"]:
                    self.spans.append(Span("categorical", offset, offset + 2))
                    offset += 2
            else:
                k = len(col["categories"])
                self.spans.append(Span("categorical", offset, offset + k))
                offset += k
        self.output_dim = offset

    # ---- serialisation ------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "TableTransformer":
        return cls(json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.spec, indent=1))

    # ---- continuous ---------------------------------------------------------------------
    @staticmethod
    def _encode_continuous(col: dict, x: np.ndarray) -> np.ndarray:
        if col["method"] == "quantile":
            q, p = np.asarray(col["quantiles"]), np.asarray(col["probs"])
            u = _quantile_forward(x, q, p)
            return ndtri(np.clip(u, _EPS, 1 - _EPS))
        return (x - col["mean"]) / col["std"]

    @staticmethod
    def _decode_continuous(col: dict, z: np.ndarray) -> np.ndarray:
        if col["method"] == "quantile":
            u = np.clip(ndtr(z), 0.0, 1.0)
            x = np.interp(u, np.asarray(col["probs"]), np.asarray(col["quantiles"]))
        else:
            x = z * col["std"] + col["mean"]
        x = np.clip(x, col["min"], col["max"])  # never outside the training range
        return np.rint(x) if col["dtype"] == "int" else x

    # ---- public API ---------------------------------------------------------------------
    def transform(self, df: pd.DataFrame, strict: bool = True) -> tuple[np.ndarray, list[str | None]]:
        """Encode typed rows. Returns (float32 array (N, D), per-row reason or None).

        Rows with a value the model cannot encode (unseen category, missing value in a column
        that had none) get a reason; with ``strict`` the first such row raises instead.
        """
        n = len(df)
        out = np.zeros((n, self.output_dim), dtype=np.float32)
        reasons: list[str | None] = [None] * n

        def flag(mask: np.ndarray, text) -> None:
            for i in np.flatnonzero(mask):
                msg = text(i)
                if strict:
                    raise PipelineError(f"row {i}: {msg}")
                reasons[i] = msg if reasons[i] is None else f"{reasons[i]}; {msg}"

        for col, start in self._layout:
            name = col["name"]
            if name not in df.columns:
                raise PipelineError(f"input has no column {name!r}; expected columns {self.schema.names}")
            values = df[name]
            if col["kind"] == "continuous":
                x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                missing = np.isnan(x)
                if not col["has_nulls"]:
                    flag(missing, lambda i, c=name: f"column {c}: missing value (the model never saw one)")
                fill = col["mean"]
                out[:, start] = self._encode_continuous(col, np.where(missing, fill, x))
                if col["has_nulls"]:
                    out[:, start + 1] = ~missing
                    out[:, start + 2] = missing
            else:
                cats = col["categories"]
                known = [c for c in cats if c is not None]
                position = np.array([cats.index(c) for c in known] + [-1], dtype=np.int64)
                codes = position[pd.Categorical(values, categories=known).codes]  # -1: unseen or null
                isnull = values.isna().to_numpy()
                if None in cats:
                    codes[isnull] = cats.index(None)
                flag(isnull & (codes < 0), lambda i, c=name: f"column {c}: missing value (the model never saw one)")
                flag(~isnull & (codes < 0), lambda i, c=name, v=values: f"column {c}: unseen category {v.iat[i]!r}")
                ok = codes >= 0
                out[np.flatnonzero(ok), start + codes[ok]] = 1.0
        return out, reasons

    def inverse_to_arrow(self, x: np.ndarray):
        """Decode vectors (continuous values, one-hot or probabilities per span) to an Arrow table
        in the original schema: vectorised numpy per column, categories taken from the vocabulary."""
        import pyarrow as pa

        arrays = []
        for col, start in self._layout:
            if col["kind"] == "continuous":
                values = self._decode_continuous(col, x[:, start].astype(np.float64))
                mask = (x[:, start + 2] > x[:, start + 1]) if col["has_nulls"] else None
                arrays.append(pa.array(values.astype(np.int64) if col["dtype"] == "int" else values, mask=mask))
            else:
                k = len(col["categories"])
                codes = np.argmax(x[:, start:start + k], axis=1)
                arrays.append(pa.array(col["categories"], type=pa.string()).take(pa.array(codes)))
        return pa.Table.from_arrays(arrays, schema=self.schema.arrow_schema(model_only=True))

    def inverse_transform(self, x: np.ndarray) -> pd.DataFrame:
        """Like ``inverse_to_arrow``, as pandas with nullable integer columns."""
        import pyarrow as pa

        return self.inverse_to_arrow(x).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)

"""Reversible, serialisable per-column encodings of a table (fitted from Spark aggregates by
``fitting.fit_spec``).

Continuous columns, three choices: mode-specific normalisation (Xu et al. 2019, section 4.2): a
variational Gaussian mixture per column, fitted on a bounded sample, encodes a value as its mode
(one-hot) and its offset within that mode (a scalar in [-1, 1]); a quantile transform to a standard
normal (robust to the heavy skew and zero spikes of Adult's capital columns); or standardisation.
A null indicator when the column had nulls. Categorical columns: one-hot over the training vocabulary, missing as its own category.

Other kinds (gen_pipeline.kinds.table.schema): datetimes and dates are encoded as continuous numbers
(microseconds or days since 1970-01-01, wall-clock; an instant, ``timestamp_ltz``, in UTC) and
decoded back to timestamps of the same zone kind and unit (``step``: whole minutes, seconds,
milliseconds) or dates, inside the training range; decimals are continuous and decoded rounded to
their scale as ``decimal(p,s)``; booleans (and integer categories) are categories decoded in their own
type; a categorical column with more than ``max_categories`` values keeps its most frequent ones
and one shared slot for the rest, decoded by drawing one of the rarer training values by its
frequency (so the encoded width is bounded and every value comes from the training vocabulary);
identifiers and constants take no encoded width: identifiers are regenerated as new values of
the original type and format (a string id's prefix and zero-padded digits, ``_regenerate``) that
are never a training id and are unique across a generate job, constants as their value. A column
that is a function of one categorical column in the training rows (``fitting.lookup_columns``)
takes no width either: it is looked up from the decoded value of that column. Free text is not
modelled (a warning names it).
The fitted state is a small versioned JSON (``transform_spec.json``) that travels with the model.
After training, the train stage adds the model's marginal calibration to the copy the registered
model carries (``TableTransformer.calibrated``): a monotone map per continuous column from the
generated values' quantiles to the training ones, and log-weights on categorical logits that
match each category's share to its training frequency.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from gen_pipeline.errors import PipelineError
from gen_pipeline.kinds.table.schema import TIMESTAMPS, TableSchema, arrow_type, base_dtype, decimal_of
from gen_pipeline.spans import Span

MAX_CATEGORIES = 100  # transform.max_categories: one-hot slots per categorical column
MAX_RARE_VALUES = 100_000  # the rare values a capped column keeps (to draw from) in the spec
OTHER = "\x00other"  # the shared slot of a capped column's rare values (never a real value)
_TIME_KINDS = ("datetime", "date")
# an hour, a minute, a second, a millisecond (in microseconds): hourly stamps stay on the hour
_TIME_STEPS = (3_600_000_000, 60_000_000, 1_000_000, 1_000)
_NUMERIC_KINDS = ("continuous", "datetime", "date")

# 2 adds the "vgm" continuous method; 3 adds its point-mass modes (``stds`` of 0). Older specs
# read unchanged.
SPEC_VERSION = 3
SUPPORTED_SPEC_VERSIONS = (1, 2, 3)
_EPS = 1e-6  # keeps ndtri finite at the ends of the quantile table
VGM_MAX_MODES = 10
VGM_MIN_WEIGHT = 0.005  # modes lighter than this are dropped (CTGAN's paper uses the same cut)
VGM_SAMPLE_ROWS = 20_000  # the bounded sample the mixtures are fitted on
VGM_POINT_SHARE = 0.05  # a single value held by this share of the rows is a mode of its own
VGM_MAX_POINTS = 10


# ---------------------------------------------------------------------------------------------
# The transformer: pure numpy/pandas, used in Spark tasks and in the model's pyfunc.
# ---------------------------------------------------------------------------------------------
def _quantile_forward(x: np.ndarray, q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Value -> cumulative probability: linear between the knots ``q`` (probabilities ``p``); a
    value equal to a run of tied knots (a point mass) maps to the run's middle probability.
    One interpolation, then one comparison per tied run (usually none or a few)."""
    u = np.interp(x, q, p)
    values, first, count = np.unique(q, return_index=True, return_counts=True)
    for v, f, c in zip(values[count > 1], first[count > 1], count[count > 1]):
        u[x == v] = p[f:f + c].mean()
    return u


def category_codes(cats: list, values: pd.Series) -> np.ndarray:
    """Values -> their index in ``cats``: a missing value the index of None where ``cats`` has it;
    -1 for a value not in ``cats`` (unseen, or missing where None is not a category)."""
    known = [c for c in cats if c is not None]
    position = np.array([cats.index(c) for c in known] + [-1], dtype=np.int64)
    codes = position[pd.Categorical(values, categories=known).codes]
    if None in cats:
        codes[values.isna().to_numpy()] = cats.index(None)
    return codes


def _unmodelled(col: dict) -> bool:
    """Identifiers and constants (regenerated) and looked-up columns: no encoded width."""
    return col["kind"] in ("identifier", "constant") or col.get("method") == "lookup"


def _calibrate(x: np.ndarray, knots, probs, quantiles) -> np.ndarray:
    """A generated value -> the training quantile at its probability among the generated values:
    ``knots`` and ``quantiles`` are the generated and the training values' quantiles at the same
    ``probs``, so between two knots the map is linear and, without ties, one interpolation. A
    value equal to a run of tied knots (a point mass) maps to the training quantile at the run's
    middle probability, as ``_quantile_forward`` does; below the first knot, the training minimum."""
    g, r = np.asarray(knots, dtype=np.float64), np.asarray(quantiles, dtype=np.float64)
    if np.all(g[1:] > g[:-1]):
        return np.interp(x, g, r)
    p = np.asarray(probs, dtype=np.float64)
    gv, first, count = np.unique(g, return_index=True, return_counts=True)
    last = first + count - 1
    at = np.interp((p[first] + p[last]) / 2, p, r)  # a value exactly at a run of knots
    i = np.searchsorted(gv, x)  # the first distinct knot >= x
    hi, lo = np.minimum(i, len(gv) - 1), np.maximum(i - 1, 0)
    width = gv[hi] - gv[lo]
    t = np.clip(np.where(width > 0, (x - gv[lo]) / np.where(width > 0, width, 1.0), 0.0), 0.0, 1.0)
    out = r[last[lo]] + t * (r[first[hi]] - r[last[lo]])  # from the left run's last knot to the right run's first
    out[i == 0] = r[0]
    return np.where(gv[hi] == x, at[hi], out)


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
        self._dictionaries: dict[str, tuple] = {}  # column -> (known values, code -> index), built when used
        offset = 0
        for col in self.columns:
            self._layout.append((col, offset))
            if _unmodelled(col):  # no width
                continue
            if col["kind"] in _NUMERIC_KINDS:
                vgm = col["method"] == "vgm"
                self.spans.append(Span("continuous", offset, offset + 1, bounded=vgm))
                offset += 1
                if vgm:  # the mode, one-hot
                    self.spans.append(Span("categorical", offset, offset + len(col["means"])))
                    offset += len(col["means"])
                if col["has_nulls"]:
                    self.spans.append(Span("categorical", offset, offset + 2))
                    offset += 2
            else:
                k = len(col["categories"])
                self.spans.append(Span("categorical", offset, offset + k, cond=True,
                                       freqs=tuple(col["frequencies"])))
                offset += k
        self.output_dim = offset
        # looked-up columns: (their place, their determining column's place, determining value -> value)
        position = {c["name"]: i for i, (c, _) in enumerate(self._layout)}
        self._lookups = [(i, position[col["from"]], dict(zip(col["keys"], col["values"])))
                         for i, (col, _) in enumerate(self._layout) if col.get("method") == "lookup"]
        # value rules (``fitting.value_rules``): B's span start -> (A's span start, A's category
        # count, A's category index -> B's category index, -1 where A's value fixes nothing)
        starts = {c["name"]: (c, start) for c, start in self._layout}
        self._rules = {}
        for col, start in self._layout:
            if "rules" in col:
                a, a_start = starts[col["rules"]["from"]]
                table = np.full(len(a["categories"]), -1, dtype=np.int64)
                for w, t in zip(col["rules"]["when"], col["rules"]["then"]):
                    table[a["categories"].index(w)] = col["categories"].index(t)
                self._rules[start] = (a_start, len(a["categories"]), table)
        # categorical span start -> the calibration's log-weights on its logits (``calibrated``)
        self._offsets = {start + self._category_start(col): np.asarray(col["logit_offsets"], dtype=np.float32)
                         for col, start in self._layout if "logit_offsets" in col}
        # categorical span start -> its column in the (N, S) codes that ``draw_categories`` returns
        self.code_index = {sp.start: i for i, sp in enumerate(sp for sp in self.spans if sp.kind == "categorical")}

    def condition(self, column: str, value: str) -> tuple[int, int]:
        """Where ``column == value`` sits in the encoding: (span start, category index)."""
        col_start = {c["name"]: (c, start) for c, start in self._layout}
        if column not in col_start:
            raise PipelineError(f"--condition {column}={value}: no column {column!r}; "
                                f"conditions name a categorical column of {self.schema.names}")
        col, start = col_start[column]
        if col.get("method") == "lookup":
            raise PipelineError(f"--condition {column}={value}: {column} is looked up from {col['from']} (a function "
                                f"of it in every training row); condition on {col['from']} instead")
        if col["kind"] != "categorical":
            raise PipelineError(f"--condition {column}={value}: {column} is continuous; conditions fix a categorical "
                                "column's value (filter the output for numeric ranges)")
        if value not in col["categories"]:
            known = [c for c in col["categories"] if c is not None]
            raise PipelineError(f"--condition {column}={value}: {value!r} is not in {column}'s training vocabulary "
                                f"{known[:12]}{' ...' if len(known) > 12 else ''}")
        return start, col["categories"].index(value)

    # ---- sampling: model output -> rows -----------------------------------------------------
    def draw(self, raw, generator):
        """One category per categorical span from the model's logits: (N, S) codes."""
        from gen_pipeline.models.base import draw_categories

        return self.ruled(draw_categories(raw, self.spans, generator, self._offsets))

    def ruled(self, codes):
        """(N, S) drawn codes (a tensor) with the value rules applied, in place: where a rule's A
        holds one of its values, B takes the value it fixes. Applying twice changes nothing (an A
        is never a B); decoding applies them itself (``inverse_to_arrow``)."""
        import torch

        for b_start, (a_start, _, table) in self._rules.items():
            a, b = self.code_index[a_start], self.code_index[b_start]
            fixed = torch.as_tensor(table, dtype=codes.dtype)[codes[:, a]]
            codes[:, b] = codes[:, b].where(fixed < 0, fixed)
        return codes

    def matches(self, raw, codes, fixed: dict[int, int]):
        """(N,) bool: the rows whose drawn categories (value rules applied) are the ``fixed`` ones."""
        import torch

        codes = self.ruled(codes.clone()) if self._rules else codes
        keep = torch.ones(len(codes), dtype=torch.bool)
        for start, index in fixed.items():
            keep &= codes[:, self.code_index[start]] == index
        return keep

    def to_arrow(self, x: np.ndarray, codes: np.ndarray | None, dictionary: bool = False,
                 row_offset: int | None = None):
        return self.inverse_to_arrow(x, codes, dictionary=dictionary, row_offset=row_offset)

    # ---- serialisation ------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "TableTransformer":
        return cls(json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.spec, indent=1))

    # ---- continuous ---------------------------------------------------------------------
    @staticmethod
    def _value_width(col: dict) -> int:
        """Encoded dims of a continuous value before its null indicator: 1, or 1 + modes (vgm)."""
        return 1 + len(col["means"]) if col["method"] == "vgm" else 1

    @staticmethod
    def _encode_continuous(col: dict, x: np.ndarray) -> np.ndarray:
        """(N,) values -> (N, width) encoding."""
        if col["method"] == "vgm":
            mu, sd, w = (np.asarray(col[k], dtype=np.float64) for k in ("means", "stds", "weights"))
            point = sd == 0  # a point-mass mode: only its own value, offset 0
            width = np.where(point, 1.0, sd)
            z = (x[:, None] - mu) / width  # (N, K)
            # The Gaussian mode with the highest responsibility (deterministic, so reruns encode
            # alike); a value equal to a point mass takes that mode.
            logp = np.where(point, -np.inf, np.log(w) - np.log(width) - 0.5 * z * z)
            at_point = point & (x[:, None] == mu)
            if point.all():  # no Gaussian mode: the nearest point mass
                logp = -np.abs(x[:, None] - mu)
            mode = np.where(at_point.any(1), np.argmax(at_point, axis=1), np.argmax(logp, axis=1))
            rows = np.arange(len(x))
            out = np.zeros((len(x), 1 + len(mu)))
            out[:, 0] = np.where(point[mode], 0.0, np.clip(z[rows, mode] / 4.0, -0.99, 0.99))  # offset within 4 sd
            out[rows, 1 + mode] = 1.0
            return out
        if col["method"] == "quantile":
            q, p = np.asarray(col["quantiles"]), np.asarray(col["probs"])
            u = _quantile_forward(x, q, p)
            return ndtri(np.clip(u, _EPS, 1 - _EPS))[:, None]
        return ((x - col["mean"]) / col["std"])[:, None]

    @staticmethod
    def _decode_continuous(col: dict, block: np.ndarray, mode: np.ndarray | None = None) -> np.ndarray:
        """(N, width) encoding (mode as one-hot, logits or probabilities, or given as ``mode``
        codes) -> (N,) values."""
        x = TableTransformer._decoded_value(col, block, mode, calibrated=True)
        x = np.clip(x, col["min"], col["max"])  # never outside the training range
        return np.rint(x) if col["dtype"] == "int" else x

    @staticmethod
    def _decoded_value(col: dict, block: np.ndarray, mode: np.ndarray | None, calibrated: bool) -> np.ndarray:
        """The value before clipping and rounding; with ``calibrated`` and a fitted ``calibration``
        (``calibrated``), mapped monotonically onto the training quantiles: under
        the quantile method the generated output's own quantiles take the normal CDF's place
        (no extra work per row), under the others the decoded value goes through the generated
        values' quantiles to the training ones."""
        z = block[:, 0].astype(np.float64)
        knots = col.get("calibration") if calibrated else None
        if col["method"] == "quantile":
            if knots:  # the generated output's quantiles straight to the training ones, one interpolation
                return np.interp(z, knots, col["quantiles"])
            return np.interp(np.clip(ndtr(z), 0.0, 1.0), col["probs"], col["quantiles"])
        if col["method"] == "vgm":
            mode = np.argmax(block[:, 1:], axis=1) if mode is None else mode
            x = np.clip(z, -1.0, 1.0) * 4.0 * np.asarray(col["stds"])[mode] + np.asarray(col["means"])[mode]
        else:
            x = z * col["std"] + col["mean"]
        return _calibrate(x, knots, col["probs"], col["quantiles"]) if knots else x

    def _category_start(self, col: dict) -> int:
        """Where a column's calibrated categorical span starts, from the column's start: a
        category column's own span, or a continuous column's null indicator."""
        return 0 if "categories" in col else self._value_width(col)

    def _free_rows(self, col: dict, start: int, codes: np.ndarray):
        """A value rule's B: (the rows whose A fixes nothing, B's training shares among such rows),
        the shares from the training frequencies of A and B; (rows, None) when none are left."""
        a_start, _, table = self._rules[start]
        a = next(c for c, st in self._layout if st == a_start)
        free = table[codes[:, self.code_index[a_start]]] < 0
        share = np.asarray(col["frequencies"], dtype=np.float64).copy()
        for i, j in enumerate(table):
            if j >= 0:
                share[j] -= a["frequencies"][i]
        share = np.maximum(share, 0.0)
        return free, (share / share.sum() if share.sum() > 0 and free.sum() >= 100 else None)

    def calibrated(self, x: np.ndarray, codes: np.ndarray, logits: bool = False) -> dict:
        """A copy of the spec whose continuous columns map generated values onto the training
        quantiles, fitted on rows the trained model generated (``x`` its output, ``codes`` its
        drawn categories, as ``inverse_to_arrow`` takes them): each column's ``calibration`` is
        the generated values' quantiles at its ``probs`` (under the quantile method, of the raw
        output the normal CDF would read; under the others, of the decoded value). Rows whose
        null indicator says missing do not count; columns learned as point masses (no
        ``quantiles``), and columns with fewer than 100 generated values, are left as they are.

        With ``logits`` (``x``'s categorical spans are the logits ``draw`` reads), each category
        column and each continuous column's null indicator also gets ``logit_offsets``: log-weights
        added to its logits so that the expected share of each category over these rows is its
        training frequency (iterative proportional fitting; ``draw`` applies them)."""
        import copy

        spec = copy.deepcopy(self.spec)
        by_name = {c["name"]: c for c in spec["columns"]}
        if logits:
            for col, start in self._layout:
                target = col.get("frequencies") if "categories" in col else \
                    [1.0 - col["null_share"], col["null_share"]] if col.get("null_share") else None
                if target is not None and len(target) > 1:
                    s = start + self._category_start(col)
                    rows = slice(None)
                    if start in self._rules:  # the rows its rule fixes are not drawn: match the others
                        rows, target = self._free_rows(col, start, codes)
                    if target is not None:
                        by_name[col["name"]]["logit_offsets"] = \
                            _match_shares(x[rows, s:s + len(target)], target).tolist()
        for col, start in self._layout:
            if col["kind"] not in _NUMERIC_KINDS or "quantiles" not in col:
                continue
            w = self._value_width(col)
            if col["method"] == "quantile":
                v = x[:, start].astype(np.float64)
            else:
                mode = codes[:, self.code_index[start + 1]] if col["method"] == "vgm" else None
                v = self._decoded_value(col, x[:, start:start + w], mode, calibrated=False)
            if col["has_nulls"]:
                v = v[codes[:, self.code_index[start + w]] == 0]
            v = v[np.isfinite(v)]
            if len(v) >= 100:
                by_name[col["name"]]["calibration"] = np.quantile(v, col["probs"]).tolist()
        return spec

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
            if _unmodelled(col):
                continue
            if col["kind"] in _NUMERIC_KINDS:
                x = _as_number(col, values)
                missing = np.isnan(x)
                if not col["has_nulls"]:
                    flag(missing, lambda i, c=name: f"column {c}: missing value (the model never saw one)")
                fill = col["mean"]
                w = self._value_width(col)
                out[:, start:start + w] = self._encode_continuous(col, np.where(missing, fill, x))
                if col["has_nulls"]:
                    out[:, start + w] = ~missing
                    out[:, start + w + 1] = missing
            else:
                cats = col["categories"]
                if decimal_of(col.get("dtype", "string")):  # the categories are decimals' text on their scale
                    values = values.map(lambda v, d=col["dtype"]: decimal_text(v, d))
                codes = category_codes(cats, values)
                isnull = values.isna().to_numpy()
                if OTHER in cats:  # a capped column: any other training value shares the OTHER slot
                    codes[~isnull & (codes < 0)] = cats.index(OTHER)
                flag(isnull & (codes < 0), lambda i, c=name: f"column {c}: missing value (the model never saw one)")
                flag(~isnull & (codes < 0), lambda i, c=name, v=values: f"column {c}: unseen category {v.iat[i]!r}")
                ok = codes >= 0
                out[np.flatnonzero(ok), start + codes[ok]] = 1.0
        return out, reasons

    def inverse_to_arrow(self, x: np.ndarray, codes: np.ndarray | None = None, dictionary: bool = False,
                         row_offset: int | None = None):
        """Decode vectors to an Arrow table in the original schema: vectorised numpy per column,
        categories taken from the vocabulary. Categorical spans are read from ``codes`` (N, S),
        one drawn category per span, when given, else by argmax (one-hot or probabilities).

        With ``dictionary`` a categorical column is a dictionary array over its vocabulary (the
        drawn codes as indices) instead of a string per row: nothing is copied, and a Parquet
        writer stores the indices as they are instead of hashing every string again.

        ``row_offset``: the job-wide index of the first row, which makes regenerated identifiers
        unique across every partition of a job (None: a random block per call, unique within it).
        """
        import pyarrow as pa

        rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(x[:256]).tobytes()))  # decoding draws: reproducible

        def code(start: int, k: int) -> np.ndarray:
            c = codes[:, self.code_index[start]] if codes is not None else np.argmax(x[:, start:start + k], axis=1)
            if start in self._rules:  # a value rule's B: where its A's value fixes it
                a_start, a_k, table = self._rules[start]
                fixed = table[code(a_start, a_k)]
                c = np.where(fixed < 0, c, fixed)
            return c

        arrays = []
        n = len(x)
        for col, start in self._layout:
            if col.get("method") == "lookup":  # from its determining column's values, once they are decoded
                arrays.append(None)
            elif col["kind"] in ("identifier", "constant"):
                arrays.append(_regenerate(col, n, rng, row_offset))
            elif col["kind"] in _TIME_KINDS:
                w = self._value_width(col)
                mode = code(start + 1, w - 1) if col["method"] == "vgm" else None
                step = col.get("step", 1)  # datetimes keep the training data's unit (whole seconds, ...)
                values = (np.rint(self._decode_continuous(col, x[:, start:start + w], mode) / step) * step) \
                    .astype(np.int64)
                mask = code(start + w, 2) == 1 if col["has_nulls"] else None
                if col["kind"] == "datetime":  # microseconds, then the column's own unit and zone kind
                    arrays.append(pa.array(values, mask=mask, type=arrow_type(col["dtype"], spark=True))
                                  .cast(arrow_type(col["dtype"]), safe=False))
                else:
                    arrays.append(pa.array(values.astype(np.int32), mask=mask).cast(pa.date32()))
            elif col["kind"] == "continuous":
                w = self._value_width(col)
                mode = code(start + 1, w - 1) if col["method"] == "vgm" else None
                values = self._decode_continuous(col, x[:, start:start + w], mode)
                mask = code(start + w, 2) == 1 if col["has_nulls"] else None
                decimal = decimal_of(col["dtype"])
                if decimal:  # rounded to the column's scale, then fixed-point of its precision and scale
                    arrays.append(pa.array(np.round(values, decimal[1]), mask=mask)
                                  .cast(pa.decimal128(*decimal), safe=False))
                else:
                    arrays.append(pa.array(values.astype(np.int64) if col["dtype"] == "int" else values, mask=mask))
            elif OTHER in col["categories"] or col.get("dtype", "string") != "string":
                arrays.append(_decode_categories(col, code(start, len(col["categories"])), rng))
            else:
                k = len(col["categories"])
                arrays.append(self._dictionary_array(col, code(start, k)) if dictionary else
                              pa.array(col["categories"], type=pa.string()).take(pa.array(code(start, k))))
        for i, k, table in self._lookups:
            key, key_start = self._layout[k]
            cats = key["categories"]
            if OTHER in cats:  # a capped column: its rarer values were drawn while decoding it
                values = np.array([table.get(v) for v in arrays[k].to_pylist()], dtype=object)
            else:
                values = np.array([table.get(c) for c in cats], dtype=object)[code(key_start, len(cats))]
            arrays[i] = _looked_up(self._layout[i][0], values)
        if dictionary:
            return pa.Table.from_arrays(arrays, names=[c.name for c in self.schema.model_columns])
        return pa.Table.from_arrays(arrays, schema=self.schema.arrow_schema(model_only=True))

    def _dictionary_array(self, col: dict, code: np.ndarray):
        """Codes as indices into the column's known values; the missing category (None) becomes a
        null index, since a Parquet writer cannot store a null inside a dictionary."""
        import pyarrow as pa

        cats = col["categories"]
        if col["name"] not in self._dictionaries:
            known = [c for c in cats if c is not None]
            index = np.array([known.index(c) if c is not None else 0 for c in cats], dtype=np.int32)
            self._dictionaries[col["name"]] = (pa.array(known, type=pa.string()), index)
        values, index = self._dictionaries[col["name"]]
        mask = code == cats.index(None) if None in cats else None
        return pa.DictionaryArray.from_arrays(pa.array(index[code], mask=mask), values)

    def inverse_transform(self, x: np.ndarray) -> pd.DataFrame:
        """Like ``inverse_to_arrow``, as pandas with nullable integer columns."""
        import pyarrow as pa

        return self.inverse_to_arrow(x).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


# ---------------------------------------------------------------------------------------------
# The kinds beyond continuous and categorical strings
# ---------------------------------------------------------------------------------------------
def _arrow_type(dtype: str):
    return arrow_type(dtype)


def _as_number(col: dict, values: pd.Series) -> np.ndarray:
    """A numeric kind's values as float64 (NaN for missing): datetimes as microseconds and dates
    as days since 1970-01-01 (wall clock: a zone-aware value is taken in its own zone)."""
    if col["kind"] == "continuous":
        return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    t = pd.to_datetime(values, errors="coerce")
    if isinstance(t.dtype, pd.DatetimeTZDtype):
        t = t.dt.tz_localize(None)
    ns = t.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
    ns[t.isna().to_numpy()] = np.nan
    return ns / 1e3 if col["kind"] == "datetime" else np.floor(ns / 86_400e9)


def _decode_categories(col: dict, code: np.ndarray, rng: np.random.Generator):
    """Codes -> values in the column's own type; a capped column's shared slot draws one of the
    rarer training values by its training frequency."""
    import pyarrow as pa

    cats = col["categories"]
    values = np.array([None if c == OTHER else c for c in cats], dtype=object)[code]
    if OTHER in cats:
        other = code == cats.index(OTHER)
        if other.any():
            p = np.asarray(col["other_frequencies"], dtype=np.float64)
            pool = np.array(col["other_values"], dtype=object)
            values[other] = pool[rng.choice(len(pool), size=int(other.sum()), p=p / p.sum())]
    if decimal_of(col.get("dtype", "string")):  # kept as text on the column's scale: exact decimals again
        import decimal

        return pa.array([None if v is None else decimal.Decimal(v) for v in values.tolist()],
                        type=_arrow_type(col["dtype"]))
    return pa.array(values.tolist(), type=_arrow_type(col.get("dtype", "string")))


def _match_shares(logits: np.ndarray, target, steps: int = 50, limit: float = 8.0) -> np.ndarray:
    """(K,) log-weights b such that the softmax of ``logits`` + b, averaged over the rows, is
    ``target``: iterative proportional fitting, each step multiplying a category's weight by its
    target share over its current share (within +-``limit``, so a category the model never gives
    weight cannot take all of it)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    target = np.asarray(target, dtype=np.float64)
    target = target / target.sum()
    b = np.zeros(z.shape[1])
    for _ in range(steps):
        p = np.exp(z + b)
        share = (p / p.sum(axis=1, keepdims=True)).mean(axis=0)
        b = np.clip(b + np.log(np.maximum(target, 1e-12) / np.maximum(share, 1e-12)), -limit, limit)
        b -= b.max()
    return b


def _looked_up(col: dict, values: np.ndarray):
    """A looked-up column's values (object array: numbers as the spec keeps them, microseconds or
    days for datetimes and dates; None for missing) as Arrow in the column's own type."""
    import pyarrow as pa

    if col["kind"] not in _NUMERIC_KINDS:
        return pa.array(values.tolist(), type=_arrow_type(col.get("dtype", "string")))
    mask = np.equal(values, None)
    x = np.where(mask, 0.0, values).astype(np.float64)
    if col["kind"] == "datetime":
        return pa.array(x.astype(np.int64), mask=mask, type=arrow_type(col["dtype"], spark=True)) \
            .cast(arrow_type(col["dtype"]), safe=False)
    if col["kind"] == "date":
        return pa.array(x.astype(np.int32), mask=mask).cast(pa.date32())
    return pa.array(x.astype(np.int64) if col["dtype"] == "int" else x, mask=mask)


def decimal_text(value, dtype: str) -> str | None:
    """A decimal column's value as text on the column's scale (``decimal(8,2)``: 5 -> ``"5.00"``),
    how a decimal category is kept in the spec and matched when encoding; None for a missing value."""
    import decimal

    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    scale = decimal_of(dtype)[1]
    return str(decimal.Decimal(str(value)).quantize(decimal.Decimal(1).scaleb(-scale)))


def _regenerate(col: dict, n: int, rng: np.random.Generator, row_offset: int | None):
    """Identifiers: new values of the original type and format that are never a training id,
    unique within a job when ``row_offset`` is given (the row's job-wide index picks its id), else
    within a random block of 2**22 ids. Integers: above the largest training id. Strings with a
    learned format (``fitting.string_id_format``: a common prefix and digits, zero-padded to a
    fixed width or not): the same prefix and width, numbered above the largest training number
    (``CUST-000123`` ... ``CUST-004711`` gives ``CUST-004712`` on; past the width's last number
    they grow a digit rather than wrap); other strings: ``syn`` and digits at the usual width.
    Constants: the value."""
    import datetime

    import pyarrow as pa

    if col["kind"] == "constant":
        v = col["value"]
        if v is not None and col["dtype"] == "date":
            v = datetime.date.fromisoformat(v)
        elif v is not None and base_dtype(col["dtype"]) in TIMESTAMPS:
            v = datetime.datetime.fromisoformat(v)
        elif v is not None and decimal_of(col["dtype"]):
            import decimal

            v = decimal.Decimal(v)
        return pa.array([v] * n, type=_arrow_type(col["dtype"]))
    start = row_offset if row_offset is not None else int(rng.integers(0, 2**30)) << 22
    index = start + np.arange(n, dtype=np.int64)
    if col["dtype"] == "int" or decimal_of(col["dtype"]):  # a decimal id: whole numbers on its scale
        ids = pa.array(col["max"] + 1 + index, type=pa.int64())
        return ids if col["dtype"] == "int" else ids.cast(pa.decimal128(38, decimal_of(col["dtype"])[1])) \
            .cast(_arrow_type(col["dtype"]))  # int64 casts only to 19+ digits; then to the column's precision
    fmt = col.get("format")
    if fmt:
        first = int(fmt["max"]) + 1 + start  # Python integers: any number of digits
        prefix, width = fmt["prefix"], fmt["digits"]
        return pa.array([f"{prefix}{first + i:0{width}d}" for i in range(n)], type=_arrow_type(col["dtype"]))
    width = max(col.get("width", 8) - 3, 1)
    return pa.array([f"syn{i:0{width}d}" for i in index], type=_arrow_type(col["dtype"]))

"""Each column kind's round trip through TableTransformer: datetimes, dates, booleans, integer
and capped categories, identifiers, constants, nulls; decoded in the original type."""

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from gen_pipeline.kinds.table.schema import Column, TableSchema
from gen_pipeline.kinds.table.fitting import _cap_categories
from gen_pipeline.kinds.table.transforms import OTHER, TableTransformer, _as_number

SCHEMA = TableSchema(columns=(
    Column("ts", "datetime", "timestamp"), Column("d", "date", "date"), Column("b", "boolean", "bool"),
    Column("id", "identifier", "int"), Column("sid", "identifier", "string"), Column("k", "constant", "string"),
    Column("zip", "categorical", "int"), Column("city", "categorical", "string"), Column("note", "text", "string")))
N = 2000


def _numeric(name, kind, dtype, x, probs=np.linspace(0, 1, 101)):
    ok = x[~np.isnan(x)]
    return {"name": name, "kind": kind, "dtype": dtype, "method": "quantile", "min": float(ok.min()),
            "max": float(ok.max()), "mean": float(ok.mean()), "std": float(ok.std()),
            "has_nulls": bool(np.isnan(x).any()), "quantiles": np.quantile(ok, probs).tolist(), "probs": probs.tolist()}


def _categorical(name, dtype, values):
    vc = values.value_counts(dropna=False)
    cats = [None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in vc.index]
    return {"name": name, "kind": "categorical", "dtype": dtype, "categories": cats, "frequencies": (vc / N).tolist()}


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    ts = pd.Series(pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**7, N), unit="s"))
    ts[rng.random(N) < 0.1] = pd.NaT  # a tenth missing: the share is reproduced
    df = pd.DataFrame({
        "ts": ts, "d": [dt.date(2020, 1, 1) + dt.timedelta(days=int(i)) for i in rng.integers(0, 300, N)],
        "b": pd.array(np.where(rng.random(N) < 0.05, None, rng.random(N) < 0.3), dtype="boolean"),
        "id": rng.permutation(N) + 1000, "sid": [f"C{i:05d}" for i in rng.permutation(N)], "k": "x",
        "zip": rng.integers(1000, 1010, N), "city": [f"c{i}" for i in rng.zipf(1.5, N) % 3000], "note": "free"})
    cols = [_numeric("ts", "datetime", "timestamp", _as_number({"kind": "datetime"}, df["ts"])),
            _numeric("d", "date", "date", _as_number({"kind": "date"}, df["d"])),
            _categorical("b", "bool", df["b"].astype(object)),
            {"name": "id", "kind": "identifier", "dtype": "int", "max": int(df["id"].max())},
            {"name": "sid", "kind": "identifier", "dtype": "string", "width": 6},
            {"name": "k", "kind": "constant", "dtype": "string", "value": "x"},
            _categorical("zip", "int", df["zip"]),
            _cap_categories(_categorical("city", "string", df["city"]), 20)]
    cols[0]["step"] = 1_000_000  # the training values are whole seconds
    spec = {"version": 3, "schema": SCHEMA.to_dict(), "columns": cols, "fitted_rows": N}
    return df, TableTransformer(spec)


def test_every_kind_round_trips_in_its_own_type(table):
    df, t = table
    x, reasons = t.transform(df, strict=True)
    assert all(r is None for r in reasons)
    out = t.inverse_to_arrow(x)
    assert out.schema == pa.schema([("ts", pa.timestamp("us")), ("d", pa.date32()), ("b", pa.bool_()),
                                    ("id", pa.int64()), ("sid", pa.string()), ("k", pa.string()),
                                    ("zip", pa.int64()), ("city", pa.string())])  # free text left out
    back = out.to_pandas()
    assert back["ts"].isna().sum() == df["ts"].isna().sum()  # the null share, exactly on a round trip
    err = (back["ts"] - df["ts"]).dropna().abs().max()
    assert err < pd.Timedelta(seconds=10**7 / 2000)  # within the quantile table's resolution
    assert back["ts"].min() >= df["ts"].min() and back["ts"].max() <= df["ts"].max()
    assert (back["ts"].dropna().dt.microsecond == 0).all()  # the training data's unit
    assert (pd.Series(back["d"]) == df["d"]).mean() > 0.95
    assert back["b"].astype(object).fillna("<na>").tolist() == df["b"].astype(object).fillna("<na>").tolist()
    assert (back["zip"] == df["zip"]).all() and (back["k"] == "x").all()
    kept = [c for c in t.columns[-1]["categories"] if c != OTHER]
    same = df["city"].isin(kept)
    assert (back["city"][same] == df["city"][same]).all()
    assert set(back["city"]) <= set(df["city"])  # only training values, rare ones drawn from their pool


def test_capped_categorical_width_is_bounded(table):
    df, t = table
    city = [s for s in t.spans if s.cond][-1]
    assert df["city"].nunique() > 200 and city.end - city.start == 20
    assert t.output_dim < 80


def test_identifiers_are_new_unique_and_of_the_original_type(table):
    df, t = table
    x, _ = t.transform(df)
    a = t.inverse_to_arrow(x, row_offset=0).to_pandas()
    b = t.inverse_to_arrow(x, row_offset=N).to_pandas()
    ids = pd.concat([a["id"], b["id"]])
    assert ids.is_unique and ids.min() > df["id"].max()  # never a training id
    sids = pd.concat([a["sid"], b["sid"]])
    assert sids.is_unique and not sids.isin(df["sid"]).any()
    r1, r2 = t.inverse_to_arrow(x).to_pandas(), t.inverse_to_arrow(x[::-1].copy()).to_pandas()
    assert r1["id"].is_unique and not set(r1["id"]) & set(r2["id"])  # random blocks: disjoint in practice


def test_dictionary_output_keeps_types(table):
    df, t = table
    x, _ = t.transform(df.head(50))
    out = t.inverse_to_arrow(x, dictionary=True)
    assert out.column_names == ["ts", "d", "b", "id", "sid", "k", "zip", "city"]
    assert out.schema.field("zip").type == pa.int64() and out.schema.field("b").type == pa.bool_()


def _id_aggregates(values: pd.Series) -> dict:
    """What fitting's Spark aggregate gives for a string id column (the same rules, in pandas)."""
    from gen_pipeline.kinds.table.fitting import ID_PATTERN

    parts = values.dropna().str.extract(ID_PATTERN)
    prefix, digits = parts[0].fillna(""), parts[1].fillna("")
    has = digits != ""
    return {"n": len(parts), "no_digits": int((~has).sum()), "prefix_min": prefix.min(), "prefix_max": prefix.max(),
            "min_len": int(digits[has].str.len().min()) if has.any() else None, "max_len": int(digits.str.len().max()),
            "leading_zeros": int(((digits.str.len() > 1) & digits.str.startswith("0")).sum()),
            "max_number": int(digits[has].astype(int).max()) if has.any() else None}


@pytest.mark.parametrize("real, pattern, first", [
    ([f"CUST-{i:06d}" for i in range(5, 4712)], r"CUST-\d{6}", "CUST-004712"),  # prefix + zero-padded digits
    ([f"{i:08d}" for i in range(100, 400)], r"\d{8}", "00000400"),  # fixed-length digit strings
    ([f"INV-{i}" for i in range(1, 3000, 7)], r"INV-[1-9]\d*", "INV-2998"),  # unpadded numbers
    ([f"A{i:03d}" for i in [*range(20), 998, 999]], r"A\d{3,}", "A1000"),  # past the width: one digit more
])
def test_string_ids_keep_their_format_are_unique_across_partitions_and_never_real(real, pattern, first):
    import re

    from gen_pipeline.kinds.table.fitting import string_id_format
    from gen_pipeline.kinds.table.transforms import _regenerate

    fmt = string_id_format(_id_aggregates(pd.Series(real)))
    assert fmt is not None
    col = {"name": "sid", "kind": "identifier", "dtype": "string", "width": max(map(len, real)), "format": fmt}
    rng = np.random.default_rng(0)
    parts = [_regenerate(col, 700, rng, row_offset=k * 700).to_pylist() for k in range(3)]  # three tasks of a job
    ids = [v for p in parts for v in p]
    assert ids[0] == first  # numbered on from the largest training id
    assert len(set(ids)) == len(ids) and not set(ids) & set(real)  # unique across partitions, never a real id
    assert all(re.fullmatch(pattern, v) for v in ids), ids[:3]


def test_string_ids_with_no_single_format_fall_back_to_syn():
    from gen_pipeline.kinds.table.fitting import string_id_format
    from gen_pipeline.kinds.table.transforms import _regenerate

    for real in (["AB12", "CD34", "EF56"],  # no common prefix
                 ["x1a", "x2b", "x3c"],  # not ending in digits
                 ["K007", "K12345", "K8"]):  # leading zeros beside other widths
        assert string_id_format(_id_aggregates(pd.Series(real))) is None, real
    col = {"name": "sid", "kind": "identifier", "dtype": "string", "width": 6}
    out = _regenerate(col, 5, np.random.default_rng(0), row_offset=10).to_pylist()
    assert out == ["syn010", "syn011", "syn012", "syn013", "syn014"]


def test_decimals_keep_precision_and_scale_and_timestamps_their_zone_kind():
    """A ``decimal(12,2)`` column decodes to decimal128(12, 2) values on its scale inside the training
    range; an instant (``timestamp_ltz``) decodes to timestamp[us, UTC] at the same instants, a
    wall-clock ``timestamp`` to timestamp[us] with no zone; constants keep their types too."""
    import decimal

    rng = np.random.default_rng(1)
    n = 1000
    amount = pd.Series([decimal.Decimal(f"{v:.2f}") for v in rng.lognormal(4, 1, n)], dtype=object)
    amount[::10] = None
    at = pd.Series(pd.to_datetime("2024-03-01", utc=True) + pd.to_timedelta(rng.integers(0, 10**6, n), unit="s"))
    local = at.dt.tz_localize(None)
    schema = TableSchema(columns=(Column("amount", "continuous", "decimal(12,2)"),
                                  Column("at", "datetime", "timestamp_ltz"), Column("local", "datetime", "timestamp"),
                                  Column("fee", "constant", "decimal(5,3)"),
                                  Column("since", "constant", "timestamp_ltz")))
    cols = [_numeric("amount", "continuous", "decimal(12,2)", _as_number({"kind": "continuous"}, amount)),
            _numeric("at", "datetime", "timestamp_ltz", _as_number({"kind": "datetime"}, at)),
            _numeric("local", "datetime", "timestamp", _as_number({"kind": "datetime"}, local)),
            {"name": "fee", "kind": "constant", "dtype": "decimal(5,3)", "value": "0.125"},
            {"name": "since", "kind": "constant", "dtype": "timestamp_ltz", "value": "2020-01-01T00:00:00+00:00"}]
    cols[1]["step"] = cols[2]["step"] = 1_000_000
    t = TableTransformer({"version": 3, "schema": schema.to_dict(), "columns": cols, "fitted_rows": n})
    df = pd.DataFrame({"amount": amount, "at": at, "local": local, "fee": decimal.Decimal("0.125"),
                       "since": pd.Timestamp("2020-01-01", tz="UTC")})
    x, reasons = t.transform(df, strict=True)
    out = t.inverse_to_arrow(x)
    assert out.schema == pa.schema([("amount", pa.decimal128(12, 2)), ("at", pa.timestamp("us", "UTC")),
                                    ("local", pa.timestamp("us")), ("fee", pa.decimal128(5, 3)),
                                    ("since", pa.timestamp("us", "UTC"))])
    back = out.to_pandas()
    got = back["amount"].dropna()
    assert back["amount"].isna().sum() == amount.isna().sum()
    assert all(v.as_tuple().exponent == -2 for v in got)  # on the column's scale
    assert got.min() >= amount.dropna().min() and got.max() <= amount.dropna().max()
    assert (back["at"] - at).abs().max() < pd.Timedelta(seconds=10**6 / 50)  # the same instants, in UTC
    assert str(back["at"].dt.tz) == "UTC" and back["local"].dt.tz is None
    assert ((back["at"].dt.tz_localize(None) - back["local"]).abs() < pd.Timedelta(seconds=10**6 / 50)).all()
    assert (back["fee"] == decimal.Decimal("0.125")).all()
    assert (back["since"] == pd.Timestamp("2020-01-01", tz="UTC")).all()


def test_decimal_categories_and_ids_come_back_as_decimals_of_their_scale():
    """A decimal column inferred (or declared) categorical or identifier decodes to decimal128 of its
    own precision and scale, not to an integer: the categories are kept as text on the column's
    scale (``5.5`` given as ``5.50`` matches), capped ones included; ids are new whole numbers."""
    import decimal

    from gen_pipeline.kinds.table.transforms import decimal_text

    rng = np.random.default_rng(2)
    n = 600
    rate = pd.Series([decimal.Decimal(v) for v in rng.choice(["0.05", "1.50", "12.25"], n)], dtype=object)
    rate[::7] = None
    code = pd.Series([decimal.Decimal(int(v)) for v in rng.integers(0, 40, n)], dtype=object)
    acct = pd.Series([decimal.Decimal(1000 + i) for i in range(n)], dtype=object)
    schema = TableSchema(columns=(Column("rate", "categorical", "decimal(6,2)"),
                                  Column("code", "categorical", "decimal(12,0)"),
                                  Column("acct", "identifier", "decimal(18,0)")))

    def cats(values, dtype):
        vc = values.map(lambda v: decimal_text(v, dtype)).value_counts(dropna=False)
        return {"categories": [None if pd.isna(v) else v for v in vc.index], "frequencies": (vc / n).tolist()}

    cols = [{"name": "rate", "kind": "categorical", "dtype": "decimal(6,2)", **cats(rate, "decimal(6,2)")},
            _cap_categories({"name": "code", "kind": "categorical", "dtype": "decimal(12,0)",
                             **cats(code, "decimal(12,0)")}, 10),
            {"name": "acct", "kind": "identifier", "dtype": "decimal(18,0)", "max": 1000 + n - 1}]
    t = TableTransformer({"version": 3, "schema": schema.to_dict(), "columns": cols, "fitted_rows": n})
    df = pd.DataFrame({"rate": rate, "code": code, "acct": acct})
    x, reasons = t.transform(df, strict=True)
    assert all(r is None for r in reasons)
    out = t.inverse_to_arrow(x, row_offset=0)
    assert out.schema == pa.schema([("rate", pa.decimal128(6, 2)), ("code", pa.decimal128(12, 0)),
                                    ("acct", pa.decimal128(18, 0))])
    back = out.to_pandas()
    assert back["rate"].tolist() == rate.tolist()  # exact values and nulls, on the scale: Decimal("1.50")
    assert all(v.as_tuple().exponent == -2 for v in back["rate"].dropna())
    kept = code.map(lambda v: decimal_text(v, "decimal(12,0)")).isin(t.columns[1]["categories"])
    assert (back["code"][kept] == code[kept]).all() and set(back["code"]) <= set(code)  # rare ones from the pool
    assert back["acct"].is_unique and back["acct"].min() > acct.max()
    x2, reasons = t.transform(pd.DataFrame({"rate": [decimal.Decimal("1.5")], "code": [decimal.Decimal(3)],
                                            "acct": [decimal.Decimal(1)]}), strict=True)
    assert reasons == [None] and t.inverse_to_arrow(x2).column("rate").to_pylist() == [decimal.Decimal("1.50")]


def test_the_validation_pass_types_decimals_and_instants():
    """``validation.validate_fields`` on fields as Spark's readers give them: a decimal field typed
    by Spark's cast (null when it does not fit the precision) and a timestamp of either zone kind."""
    import datetime

    from gen_pipeline.kinds.table.schema import REASON
    from gen_pipeline.kinds.table.validation import _BINARY, _CAST, _CORRUPT, validate_fields

    schema = TableSchema(columns=(Column("amount", "continuous", "decimal(6,2)"),
                                  Column("at", "datetime", "timestamp_ltz")), missing_token="")
    utc = datetime.timezone.utc
    table = pa.table({
        "source": ["f"] * 4, "line": [1, 2, 3, 4], "text": ["a"] * 4,
        "amount": ["12.50", "123456789", "x", ""], "at": ["2024-01-01 10:00:00", "2024-01-01 11:00:00", "", "bad"],
        _CORRUPT: pa.array([None] * 4, pa.string()), _BINARY: [False] * 4,
        _CAST + "amount": pa.array([decimal_("12.50"), None, None, None], pa.decimal128(6, 2)),
        _CAST + "at": pa.array([datetime.datetime(2024, 1, 1, 10, tzinfo=utc),
                                datetime.datetime(2024, 1, 1, 11, tzinfo=utc), None, None], pa.timestamp("us", "UTC"))})
    out = validate_fields(table, schema)
    assert out.schema.field("amount").type == pa.decimal128(6, 2)
    assert out.schema.field("at").type == pa.timestamp("us", "UTC")
    assert out.column("amount").to_pylist()[0] == decimal_("12.50")
    reasons = out.column(REASON).to_pylist()
    assert reasons[0] is None and reasons[1] == "column amount: '123456789' does not fit decimal(6,2)"
    assert reasons[2] == "column amount: 'x' is not a number" and reasons[3] == "column at: 'bad' is not a timestamp"


def decimal_(text):
    import decimal

    return decimal.Decimal(text)


def test_millisecond_timestamps_are_generated_in_milliseconds(tmp_path):
    """``timestamp[ms]`` (a Parquet input's unit, read from its footer by ``parquet_units``)
    decodes to timestamp[ms]; Spark's side of the schema stays in microseconds."""
    import pyarrow.parquet as pq

    from gen_pipeline.kinds.table.inference import parquet_units

    pq.write_table(pa.table({"a": pa.array([0, 1], pa.timestamp("ms")), "b": pa.array([0, 1], pa.timestamp("us")),
                             "c": pa.array([0, 1], pa.timestamp("ms", "UTC"))}), tmp_path / "t.parquet")
    assert parquet_units(str(tmp_path / "t.parquet")) == {"a": "ms", "c": "ms"}
    schema = TableSchema(columns=(Column("a", "datetime", "timestamp[ms]"),
                                  Column("c", "datetime", "timestamp_ltz[ms]")))
    assert schema.arrow_schema() == pa.schema([("a", pa.timestamp("ms")), ("c", pa.timestamp("ms", "UTC"))])
    assert schema.arrow_schema(spark=True) == pa.schema([("a", pa.timestamp("us")), ("c", pa.timestamp("us", "UTC"))])
    assert schema.spark_ddl() == "`a` timestamp_ntz, `c` timestamp"
    ts = pd.Series(pd.to_datetime("2024-01-01") + pd.to_timedelta(np.arange(500) * 1234, unit="ms"))
    cols = [_numeric("a", "datetime", "timestamp[ms]", _as_number({"kind": "datetime"}, ts)),
            _numeric("c", "datetime", "timestamp_ltz[ms]", _as_number({"kind": "datetime"}, ts))]
    cols[0]["step"] = cols[1]["step"] = 1_000
    t = TableTransformer({"version": 3, "schema": schema.to_dict(), "columns": cols, "fitted_rows": 500})
    x, _ = t.transform(pd.DataFrame({"a": ts, "c": ts.dt.tz_localize("UTC")}))
    out = t.inverse_to_arrow(x)
    assert out.schema == schema.arrow_schema()
    back = out.to_pandas()
    assert (back["a"] - ts).abs().max() < pd.Timedelta(seconds=10) and back["a"].min() >= ts.min()

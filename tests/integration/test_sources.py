"""Tables read through Spark's own readers (gen_pipeline.kinds.table.sources): the bad inputs of a real
table each become a counted quarantine with a reason, or a one-line error naming the file."""

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gen_pipeline.errors import PipelineError
from gen_pipeline.kinds.table.inference import infer_schema, resolve_schema, sample_table
from gen_pipeline.kinds.table.schema import REASON, Column, TableSchema
from gen_pipeline.kinds.table.sources import TableSource, read_table

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCHEMA = TableSchema(columns=(Column("id", "identifier", "int"), Column("name", "categorical", "string"),
                              Column("score", "continuous", "float")), header=True, missing_token="")


def _read(spark, paths, schema=SCHEMA, **options):
    df, inputs = read_table(spark, TableSource.of(paths, options.pop("format", None), options), schema)
    return df.toPandas().sort_values(["source", "line"]).reset_index(drop=True), inputs


def test_quoting_bom_crlf_and_bad_records(spark, tmp_path):
    f = tmp_path / "t.csv"
    f.write_bytes("\ufeffid,name,score\r\n"
                  '1,"Smith, J",1.5\r\n'          # a quoted comma
                  '2,"say ""hi""",2\r\n'          # doubled quotes inside quotes
                  "3,b\r\n"                       # too few fields
                  "4,c,NaN\r\n"                   # not finite
                  "5,d,Infinity\r\n"
                  "6,e,abc\r\n"                   # not a number
                  "7,f,1,extra\r\n"               # too many fields
                  "\r\n"                          # a blank line is not a row
                  '8,"two\r\nlines",3\r\n'.encode())  # a line break inside quotes: one line per record
    out, inputs = _read(spark, [f])
    assert inputs[0]["path"] == str(f) and inputs[0]["bytes"] == f.stat().st_size and "sha256" not in inputs[0]
    good = out[out[REASON].isna()]
    assert good["name"].tolist() == ["Smith, J", 'say "hi"'] and good["line"].tolist() == [2, 3]
    reasons = dict(zip(out["line"], out[REASON]))
    assert reasons[4] == "expected 3 fields separated by ',', got 2"
    assert "column score: 'NaN' is not finite" in reasons[5] and "'Infinity' is not finite" in reasons[6]
    assert "column score: 'abc' is not a number" in reasons[7] and "got 4" in reasons[8]
    assert len(out) == 2 + 5 + 2  # the quoted line break splits a record in two, both quarantined and counted
    assert out[REASON].notna().sum() == 7

    multi, _ = _read(spark, [f], multi_line=True)  # with multi_line the quoted line break is one record
    assert "two\r\nlines" in multi.loc[multi[REASON].isna(), "name"].tolist() or \
        "two\nlines" in multi.loc[multi[REASON].isna(), "name"].tolist()
    assert multi[REASON].isna().sum() == 3 and len(multi) == 8


def test_header_problems_and_binary_bytes(spark, tmp_path):
    (tmp_path / "only.csv").write_text("id,name,score\n")
    out, _ = _read(spark, [tmp_path / "only.csv"])
    assert len(out) == 0  # a header-only file has no rows (preprocess then stops: no data lines)
    (tmp_path / "dup.csv").write_text("id,name,name\n1,a,2\n")
    with pytest.raises(PipelineError, match=r"dup.csv: the header names column 'name' 2 times"):
        _read(spark, [tmp_path / "dup.csv"])
    (tmp_path / "other.csv").write_text("id,nom,score\n1,a,2\n")
    with pytest.raises(PipelineError, match=r"other.csv: the header has no column 'name'"):
        _read(spark, [tmp_path / "other.csv"])
    (tmp_path / "bin.csv").write_bytes(bytes(range(256)) * 4)
    out, _ = _read(spark, [tmp_path / "bin.csv"], header=False)
    assert len(out) > 0 and out[REASON].notna().all()
    assert out[REASON].str.contains("binary or non-UTF-8|expected 3 fields").all()
    assert out[REASON].str.contains("binary").any()
    with pytest.raises(PipelineError, match="nope.csv: input file not found"):
        _read(spark, [tmp_path / "nope.csv"])


def test_parquet_typed_columns_truncation_and_drift(spark, tmp_path):
    schema = TableSchema(columns=(Column("id", "identifier", "int"), Column("when", "datetime", "timestamp"),
                                  Column("day", "date", "date"), Column("ok", "boolean", "bool"),
                                  Column("score", "continuous", "float")))
    t = pa.table({"id": [1, 2, 3], "when": pa.array([dt.datetime(2024, 1, 1, 12), None, dt.datetime(2024, 2, 1)],
                                                  pa.timestamp("us")),
                  "day": [dt.date(2020, 1, 1), dt.date(2021, 1, 1), None], "ok": [True, False, None],
                  "score": [1.0, float("inf"), 2.5]})
    pq.write_table(t, tmp_path / "a.parquet")
    out, inputs = _read(spark, [tmp_path / "a.parquet"], schema)
    assert out["line"].tolist() == [1, 2, 3] and out["source"].tolist() == ["a.parquet"] * 3
    assert out[REASON].tolist()[0] is None and "column score: 'Infinity' is not finite" in out[REASON][1]
    assert out.loc[0, "when"] == pd.Timestamp("2024-01-01 12:00") and out.loc[0, "day"] == dt.date(2020, 1, 1)
    assert out["ok"].tolist()[:2] == [True, False] and pd.isna(out["when"][1])

    pq.write_table(t.set_column(4, "score", pa.array(["1", "x", "2"])), tmp_path / "drift.parquet")
    out, _ = _read(spark, [tmp_path / "drift.parquet"], schema)  # a column of another type: values checked
    assert "column score: 'x' is not a number" in out[REASON][1]
    pq.write_table(t.drop(["score"]), tmp_path / "less.parquet")
    with pytest.raises(PipelineError, match=r"less.parquet: column 'score' not found"):
        _read(spark, [tmp_path / "less.parquet"], schema)
    data = (tmp_path / "a.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(PipelineError, match=r"cut.parquet: not a readable parquet file"):
        _read(spark, [tmp_path / "cut.parquet"], schema)


def test_decimals_and_time_zones_keep_their_types_from_parquet_to_generated_rows(spark, tmp_path):
    """A DECIMAL(10,2), an instant (timestamp with a zone: Spark TIMESTAMP), a wall-clock timestamp
    (Spark TIMESTAMP_NTZ) and one stored in milliseconds are inferred, read, fitted and decoded in
    their own types and units; a DECIMAL(12,0) with few values (categories) and a unique DECIMAL(18,0)
    (an id) come back as decimals of their precision, not as integers."""
    import decimal

    from gen_pipeline.kinds.table.fitting import fit_spec
    from gen_pipeline.kinds.table.transforms import TableTransformer

    n = 120
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    at = [start + dt.timedelta(minutes=7 * i) for i in range(n)]
    t = pa.table({"amount": pa.array([decimal.Decimal(f"{i * 1.37 % 90:.2f}") for i in range(n)], pa.decimal128(10, 2)),
                  "at": pa.array(at, pa.timestamp("us", "Europe/Paris")),
                  "local": pa.array([a.replace(tzinfo=None) for a in at], pa.timestamp("us")),
                  "ms": pa.array([a.replace(tzinfo=None) for a in at], pa.timestamp("ms")),
                  "grade": pa.array([decimal.Decimal(i % 4) for i in range(n)], pa.decimal128(12, 0)),
                  "acct": pa.array([decimal.Decimal(5000 + i) for i in range(n)], pa.decimal128(18, 0))})
    pq.write_table(t, tmp_path / "typed.parquet")
    sample, types, opts = sample_table(spark, TableSource.of(str(tmp_path / "typed.parquet")))
    schema, why = infer_schema(sample, types, opts)
    assert [(c.kind, c.dtype) for c in schema.columns] == [
        ("continuous", "decimal(10,2)"), ("datetime", "timestamp_ltz"), ("datetime", "timestamp"),
        ("datetime", "timestamp[ms]"), ("categorical", "decimal(12,0)"), ("identifier", "decimal(18,0)")], why
    df, _ = read_table(spark, TableSource.of(str(tmp_path / "typed.parquet")), schema)
    types = dict(df.dtypes)
    assert (types["amount"], types["at"], types["local"], types["ms"]) == (
        "decimal(10,2)", "timestamp", "timestamp_ntz", "timestamp_ntz")
    rows = df.orderBy("line").toPandas()
    assert rows[REASON].isna().all()
    assert rows["amount"].tolist()[:2] == [decimal.Decimal("0.00"), decimal.Decimal("1.37")]
    assert pd.Timestamp(rows["at"][1]).tz_localize("UTC") == pd.Timestamp(at[1])  # the same instant (UTC session)
    assert pd.Timestamp(rows["local"][1]) == pd.Timestamp(at[1]).tz_localize(None)  # the same wall clock
    spec = fit_spec(df, schema, "quantile", 50)
    tt = TableTransformer(spec)
    out = tt.inverse_to_arrow(np.random.default_rng(0).normal(size=(200, tt.output_dim)).astype("float32"))
    assert out.schema == pa.schema([("amount", pa.decimal128(10, 2)), ("at", pa.timestamp("us", "UTC")),
                                    ("local", pa.timestamp("us")), ("ms", pa.timestamp("ms")),
                                    ("grade", pa.decimal128(12, 0)), ("acct", pa.decimal128(18, 0))])
    assert set(out.column("grade").to_pylist()) <= {decimal.Decimal(i) for i in range(4)}
    assert min(out.column("acct").to_pylist()) > 5000 + n - 1
    assert min(out.column("at").to_pylist()) >= at[0] and max(out.column("at").to_pylist()) <= at[-1]


def test_inferred_schema_is_written_reused_and_checked(spark, tmp_path, capsys):
    rows = ["id,when,grade,city,amount,flag"]
    rows += [f"{i},2024-01-{1 + i % 28:02d} 10:00:00,{i % 5},c{i % 40},{i * 1.5},{'true' if i % 3 else 'false'}"
             for i in range(60)]
    (tmp_path / "my data.csv").write_text("\n".join(rows) + "\n")
    src = TableSource.of(str(tmp_path / "my data.csv"))
    assert src.name() == "my_data"
    schema = resolve_schema(spark, src, "my_data", tmp_path / "work")
    kinds = {c.name: c.kind for c in schema.columns}
    assert kinds == {"id": "identifier", "when": "datetime", "grade": "categorical", "city": "categorical",
                     "amount": "continuous", "flag": "boolean"}
    saved = tmp_path / "work" / "schemas" / "my_data.yaml"
    assert "column" in capsys.readouterr().out and saved.is_file()
    saved.write_text(saved.read_text().replace("{name: grade, kind: categorical", "{name: grade, kind: continuous"))
    again = resolve_schema(spark, src, "my_data", tmp_path / "work")  # the edited file is reused
    assert {c.name: c.kind for c in again.columns}["grade"] == "continuous"
    with pytest.raises(PipelineError, match=r"column city: declared continuous .* non-numbers such as 'c0'"):
        resolve_schema(spark, src, "my_data", tmp_path / "work", overrides={"city": "continuous"})
    df, _ = read_table(spark, src, schema)
    assert df.where(f"{REASON} is null").count() == 60
    sample, types, opts = sample_table(spark, src)
    assert infer_schema(sample, types, opts)[0] == schema


def test_inference_samples_the_whole_input_not_its_head(spark, tmp_path):
    """A file sorted by date: its first rows hold one month. The sample is spread over the whole
    file (seeded), so ``month`` is a column of categories, not a constant, and ``at`` (ISO 8601
    with a ``Z``) is an instant, on whole hours, which the fitted step keeps."""
    from gen_pipeline.kinds.table.fitting import fit_spec

    rows = ["id,month,at,amount"] + [f"{i},{1 + i * 12 // 1000},2013-{1 + i * 12 // 1000:02d}-01T10:00:00Z,{i * 0.5}"
                                     for i in range(1000)]
    (tmp_path / "sorted.csv").write_text("\n".join(rows) + "\n")
    sample, types, opts = sample_table(spark, TableSource.of(str(tmp_path / "sorted.csv")), sample_rows=200)
    schema, why = infer_schema(sample, types, opts)
    kinds = {c.name: (c.kind, c.dtype) for c in schema.columns}
    assert 100 < len(sample) <= 200 and sample["month"].nunique() > 6, why
    assert kinds["month"] == ("categorical", "int") and kinds["at"] == ("datetime", "timestamp_ltz"), why
    df, _ = read_table(spark, TableSource.of(str(tmp_path / "sorted.csv")), schema)
    at = df.orderBy("line").toPandas()
    assert at[REASON].isna().all() and pd.Timestamp(at["at"][999]) == pd.Timestamp("2013-12-01 10:00:00")  # UTC
    spec = {c["name"]: c for c in fit_spec(df, schema, "quantile", 50)["columns"]}
    assert spec["at"]["step"] == 3_600_000_000  # an hour, in microseconds


def test_discrete_values_make_few_whole_numbers_point_masses_under_the_quantile_method(spark, tmp_path):
    """``transform.discrete_values`` acts whatever the continuous method: under ``quantile`` a
    column of a few whole numbers is one point mass per value (decoded exactly), a column of many
    values keeps its quantile transform, and 0 leaves both to the quantiles."""
    from gen_pipeline.kinds.table.fitting import fit_spec
    from gen_pipeline.kinds.table.transforms import TableTransformer

    rng = np.random.default_rng(0)
    hours = rng.choice([20, 35, 40, 60], p=[0.1, 0.2, 0.6, 0.1], size=600)
    rows = ["hours,weight"] + [f"{h},{w:.3f}" for h, w in zip(hours, rng.lognormal(3, 1, 600))]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    schema = TableSchema(columns=(Column("hours", "continuous", "int"), Column("weight", "continuous", "float")),
                         missing_token="")
    df, _ = read_table(spark, TableSource.of(str(tmp_path / "t.csv")), schema)
    spec = {c["name"]: c for c in fit_spec(df, schema, "quantile", 50, discrete_values=128)["columns"]}
    assert spec["hours"]["method"] == "vgm" and spec["hours"]["means"] == [20.0, 35.0, 40.0, 60.0]
    assert set(spec["hours"]["stds"]) == {0.0} and spec["weight"]["method"] == "quantile"
    enc = TableTransformer._encode_continuous(spec["hours"], hours.astype(float))
    assert (TableTransformer._decode_continuous(spec["hours"], enc) == hours).all()
    off = {c["name"]: c["method"] for c in fit_spec(df, schema, "quantile", 50)["columns"]}
    assert off == {"hours": "quantile", "weight": "quantile"}


def test_your_own_csv_through_preprocess_with_an_inferred_schema(spark, runtime, tiny_config, tmp_path):
    import json

    from gen_pipeline.kinds.table import TABLE
    from gen_pipeline.kinds.table.inference import source_table
    from gen_pipeline.layout import PreprocessOutput
    from gen_pipeline.stages.preprocess import run_preprocess

    rng = np.random.default_rng(0)
    n = 400
    when = pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**7, n), unit="s")
    rows = ["order_id;placed;paid;region;amount;comment;vip"]
    rows += [f"O{i:05d};{when[i]:%Y-%m-%d %H:%M:%S};{'true' if i % 3 else 'false'};r{i % 150};"
             f"{'' if i % 10 == 0 else round(rng.lognormal(3, 1), 2)};\"a long, free comment about order {i}\";"
             f"{'yes' if i % 4 == 0 else 'no'}" for i in range(n)]
    rows.append("O99999;not a date;true;r1;5;x;no")  # quarantined: the reason names the column
    (tmp_path / "orders.csv").write_text("\n".join(rows) + "\n")
    cfg = tiny_config.model_copy(update={
        "name": "orders", "data": tiny_config.data.model_copy(update={"source": str(tmp_path / "orders.csv"),
                                                                      "max_rows_per_file": None}),
        "transform": tiny_config.transform.model_copy(update={"max_categories": 50}),
        "evaluate": tiny_config.evaluate.model_copy(update={"tstr_label": "vip", "tstr_positive": None})})
    table = source_table(cfg, spark, runtime.work_dir)
    kinds = {c.name: c.kind for c in table.schema.columns}
    assert kinds == {"order_id": "identifier", "placed": "datetime", "paid": "boolean", "region": "categorical",
                     "amount": "continuous", "comment": "text", "vip": "boolean"}
    manifest = run_preprocess(spark, cfg, None, tmp_path / "pre", records=TABLE.read_files(spark, cfg, table))
    assert manifest["rows_in"] == n + 1 and manifest["rows_quarantined"] == 1
    assert list(manifest["quarantine_reasons"]) == ["column placed: 'not a date' is not a timestamp"]
    spec = {c["name"]: c for c in json.loads((tmp_path / "pre" / "transform_spec.json").read_text())["columns"]}
    assert "comment" not in spec and spec["placed"]["step"] == 1_000_000
    assert spec["order_id"]["format"] == {"prefix": "O", "digits": 5, "max": 399}  # O00000..O00399 (O99999 quarantined)
    assert len(spec["region"]["categories"]) == 50 and spec["amount"]["has_nulls"]  # capped; nulls kept
    clean = PreprocessOutput(tmp_path / "pre").read_clean("train")
    assert str(clean["placed"].dtype).startswith("datetime64") and clean["paid"].dtype == bool


def test_json_lines_orc_folders_and_globs(spark, tmp_path):
    import pyarrow.orc as orc

    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "a.jsonl").write_text('{"id": 1, "name": "x", "score": 1.5}\n'
                                            '{"id": 2, "name": "y", "score": "NaN"}\n'
                                            'not json\n'
                                            '{"id": 3, "name": "z"}\n')
    (tmp_path / "j" / "_SUCCESS").write_text("")
    out, inputs = _read(spark, [tmp_path / "j"])  # a folder: hidden and empty files skipped
    assert [i["path"].rsplit("/", 1)[-1] for i in inputs] == ["a.jsonl"] and out["line"].tolist() == [1, 2, 3, 4]
    assert out[REASON].tolist()[0] is None and "not finite" in out[REASON][1]
    assert out[REASON][2].startswith("not a JSON record") and out[REASON][3] is None and pd.isna(out["score"][3])
    orc.write_table(pa.table({"id": [1, 2], "name": ["a", None], "score": [0.5, 2.0]}), str(tmp_path / "b.orc"))
    orc.write_table(pa.table({"id": [3], "name": ["c"], "score": [1.0]}), str(tmp_path / "c.orc"))
    out, inputs = _read(spark, [str(tmp_path / "*.orc")])  # a glob
    assert len(inputs) == 2 and out[REASON].isna().all() and out["id"].tolist() == [1, 2, 3]
    assert pd.isna(out["name"][1])


def test_preprocess_with_no_usable_row_says_why(spark, tiny_config, tmp_path):
    from gen_pipeline.kinds.table import TABLE
    from gen_pipeline.kinds.table.datasets import RawTable
    from gen_pipeline.stages.preprocess import run_preprocess

    (tmp_path / "bin.csv").write_bytes(bytes(range(256)) * 8)
    table = RawTable("bin", (tmp_path / "bin.csv",), SCHEMA, TableSource.of([tmp_path / "bin.csv"], None,
                                                                           {"header": False}))
    with pytest.raises(PipelineError, match=r"bin.csv: none of the \d+ records is usable; most often: binary"):
        run_preprocess(spark, tiny_config, None, tmp_path / "pre", records=TABLE.read_files(spark, tiny_config, table))
    assert not (tmp_path / "pre").exists()  # nothing committed


def test_pandas_nanosecond_parquet_is_a_one_line_error_with_the_fix(spark, tmp_path):
    pd.DataFrame({"when": pd.to_datetime(["2024-01-01", "2024-02-01"])}).to_parquet(tmp_path / "ns.parquet")
    with pytest.raises(PipelineError, match=r"ns.parquet: not a readable parquet file .*coerce_timestamps='us'"):
        sample_table(spark, TableSource.of(str(tmp_path / "ns.parquet")))


def test_a_catalog_table_is_fingerprinted_by_its_files(spark, tmp_path):
    """``table:NAME``: the listing is the table's files (path, size, modification time), so a table
    that gains or rewrites a file gets another fingerprint; the name alone would not change."""
    from gen_pipeline.config import PipelineConfig
    from gen_pipeline.stages.preprocess import fingerprint

    folder = tmp_path / "tbl"
    spark.createDataFrame([(i, f"n{i % 3}", i / 2) for i in range(30)], "id long, name string, score double") \
        .coalesce(1).write.parquet(str(folder))
    spark.sql(f"CREATE TABLE byo_listing USING parquet LOCATION '{folder}'")
    try:
        cfg = PipelineConfig(name="t", model_name="t", data={"source": "table:byo_listing"})
        out, inputs = read_table(spark, TableSource.of("table:byo_listing"), SCHEMA)
        assert len(out.toPandas()) == 30 and inputs[0]["path"] == "table:byo_listing"
        (part,) = [p for p in folder.glob("part-*")]
        assert inputs[0]["files"] == [{"path": str(part), "bytes": part.stat().st_size,
                                       "modified": inputs[0]["modified"]}] and inputs[0]["bytes"] == part.stat().st_size
        spark.createDataFrame([(99, "n0", 1.0)], "id long, name string, score double").write.mode("append") \
            .parquet(str(folder))  # the table changes under the same name
        out2, inputs2 = read_table(spark, TableSource.of("table:byo_listing"), SCHEMA)
        assert len(out2.toPandas()) == 31 and len(inputs2[0]["files"]) == len(list(folder.glob("part-*"))) > 1
        assert fingerprint(inputs2, cfg) != fingerprint(inputs, cfg)
        assert fingerprint(read_table(spark, TableSource.of("table:byo_listing"), SCHEMA)[1], cfg) == \
            fingerprint(inputs2, cfg)  # unchanged: the same fingerprint
        with pytest.raises(PipelineError, match="table no_such_db.nope: cannot read it"):
            read_table(spark, TableSource.of("table:no_such_db.nope"), SCHEMA)
    finally:
        spark.sql("DROP TABLE IF EXISTS byo_listing")


def test_columns_that_are_a_function_of_a_category_are_looked_up_not_modelled(spark, tmp_path):
    """``transform.lookup_columns``: a name, a number and a date that are each the same in every row
    of an airport code are looked up from the code (no encoded width) and always agree with it
    after decoding; a column that breaks the rule in one row of 600, and an unrelated one, stay
    modelled; off, nothing is looked up."""
    from gen_pipeline.kinds.table.fitting import fit_spec
    from gen_pipeline.kinds.table.transforms import TableTransformer

    rng = np.random.default_rng(0)
    airports = {"JFK": ("Kennedy", 13.0, "2001-01-05"), "LGA": ("La Guardia", 21.0, "2002-03-01"),
                "EWR": ("Newark", 18.0, "2003-07-09"), "": ("unknown", 0.0, "")}
    codes = rng.choice(list(airports), size=600)
    near = [f"n{int(k == 'JFK')}" for k in codes]
    near[17] = "n7"  # one row breaks the rule: not a function of the code
    lines = ["code,name,alt,opened,near,delay"] + [
        f"{k},{airports[k][0]},{airports[k][1]},{airports[k][2]},{m},{d:.2f}"
        for k, m, d in zip(codes, near, rng.normal(10, 5, 600))]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    schema = TableSchema(columns=(Column("code", "categorical", "string"), Column("name", "categorical", "string"),
                                  Column("alt", "continuous", "float"), Column("opened", "date", "date"),
                                  Column("near", "categorical", "string"), Column("delay", "continuous", "float")),
                         header=True, missing_token="")
    df, _ = read_table(spark, TableSource.of(str(tmp_path / "t.csv")), schema)
    spec = fit_spec(df, schema, "quantile", 50, lookups=True)
    methods = {c["name"]: c.get("method") for c in spec["columns"]}
    assert methods == {"code": None, "name": "lookup", "alt": "lookup", "opened": "lookup", "near": None,
                       "delay": "quantile"}
    tr = TableTransformer(spec)
    assert tr.output_dim == 4 + 3 + 1  # code (3 values and null), near (3), delay: nothing for the three looked up
    x = np.zeros((400, tr.output_dim), np.float32)
    x[np.arange(400), rng.integers(0, 4, 400)] = 1.0  # any code, null included
    out = tr.inverse_transform(x)
    want = {k or None: v for k, v in airports.items()}
    assert out["name"].tolist() == [want[k][0] for k in out["code"]]
    assert out["alt"].tolist() == [want[k][1] for k in out["code"]]
    assert [None if pd.isna(d) else str(d) for d in out["opened"]] == [want[k][2] or None for k in out["code"]]
    real = df.toPandas()
    encoded, reasons = tr.transform(real[schema.names])  # encoding reads no looked-up column
    assert encoded.shape == (600, tr.output_dim) and set(reasons) == {None}
    with pytest.raises(PipelineError, match="name is looked up from code"):
        tr.condition("name", "Newark")
    off = fit_spec(df, schema, "quantile", 50)["columns"]
    assert not [c for c in off if c.get("method") == "lookup"]


def test_values_that_another_column_fixes_in_nearly_every_row_become_rules(spark, tmp_path):
    """``fitting.value_rules`` (with ``transform.lookup_columns``): husbands are men and wives
    women in all but one row of 1,100, children either: ``sex`` gets a rule from ``rel`` for
    the two values and stays modelled; a value with too few rows, or agreement below 99.8% over
    all rows (a candidate in the sample at 99.5%), makes none."""
    from gen_pipeline.kinds.table.fitting import fit_spec

    rng = np.random.default_rng(1)
    rel = ["Husband"] * 1100 + ["Wife"] * 500 + ["Child"] * 1000 + ["Uncle"] * 100 + ["Boarder"] * 400
    sex = ["Male"] * 1099 + ["Female"] + ["Female"] * 500 + list(rng.choice(["Male", "Female"], 1000)) \
        + ["Male"] * 100 + ["Male"] * 398 + ["Female"] * 2  # Uncle: too few rows; Boarder: 99.5% agree
    lines = ["rel,sex,age"] + [f"{r},{x},{a}" for r, x, a in zip(rel, sex, rng.integers(18, 80, len(rel)))]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    schema = TableSchema(columns=(Column("rel", "categorical", "string"), Column("sex", "categorical", "string"),
                                  Column("age", "continuous", "int")), header=True, missing_token="")
    df, _ = read_table(spark, TableSource.of(str(tmp_path / "t.csv")), schema)
    spec = {c["name"]: c for c in fit_spec(df, schema, "quantile", 50, lookups=True)["columns"]}
    rule = spec["sex"]["rules"]
    assert rule["from"] == "rel" and dict(zip(rule["when"], rule["then"])) == {"Husband": "Male", "Wife": "Female"}
    assert "rules" not in spec["rel"] and "method" not in spec["sex"]  # still modelled
    assert not any("rules" in c for c in fit_spec(df, schema, "quantile", 50)["columns"])  # off with the lookups


def test_the_summaries_the_validation_pass_makes_fit_the_same_spec_as_a_pass_of_their_own(spark, tmp_path):
    """The fit's per-partition summaries, made by the validation pass as it reads (an accumulator
    keyed by partition), give exactly the spec that a pass of their own over the typed rows gives:
    datetimes, dates, integers, floats with nulls, strings with nulls and booleans, over three
    files (three partitions), one with a rejected row; and a uniform sample of the usable rows,
    pooled over the partitions. A task run again replaces its partition's summary and sampled
    rows instead of adding to them."""

    from gen_pipeline.kinds.table.fitting import SAMPLE, PartitionSummaries, Summaries, fit_spec, sampled_columns
    from gen_pipeline.kinds.table.sources import read_records

    schema = TableSchema(columns=(
        Column("id", "identifier", "int"), Column("at", "datetime", "timestamp"), Column("day", "date", "date"),
        Column("grade", "categorical", "string"), Column("ok", "boolean", "bool"),
        Column("amount", "continuous", "float"), Column("n", "continuous", "int")), header=True, missing_token="")
    rng = np.random.default_rng(3)
    paths = []
    for f in range(3):
        lines = ["id,at,day,grade,ok,amount,n"]
        for i in range(400):
            k = f * 1000 + i
            at = dt.datetime(2024, 1, 1) + dt.timedelta(minutes=int(rng.integers(0, 500_000)))
            amount = "" if i % 7 == 0 else f"{rng.lognormal(3, 1):.2f}"
            grade = "" if i % 11 == 0 else "ABCDE"[int(rng.integers(0, 5)) if f else i % 2]
            lines.append(f"{k},{at:%Y-%m-%d %H:%M:%S},{at:%Y-%m-%d},{grade},{'true' if i % 3 else 'false'},"
                         f"{amount},{int(rng.integers(-50, 50))}")
        if f == 1:
            lines.append("9999,not a time,2024-01-01,A,true,1.0,1")  # rejected: not in the fit
        paths.append(tmp_path / f"part{f}.csv")
        paths[-1].write_text("\n".join(lines) + "\n")
    records, validate, _ = read_records(spark, [str(p) for p in paths], schema)
    sampled = sampled_columns(schema, "quantile", 0, lookups=True)
    acc = spark.sparkContext.accumulator({}, Summaries(500))
    plan = PartitionSummaries(schema, sampled=sampled, sample_rows=500)
    parsed, n = validate(records, (plan, acc), into=tmp_path / "validated")  # as preprocess runs it
    good = parsed.filter(parsed[REASON].isNull())
    assert good.count() == 1200 and parsed.count() == 1201
    assert sorted(p.name for p in (tmp_path / "validated").iterdir()) == [f"part-{k:05d}.parquet" for k in range(n)]
    parts = {k: v for k, v in acc.value.items() if k != SAMPLE}
    assert n >= 2 and sorted(parts) == list(range(n)) and sum(p["rows"] for p in parts.values()) == 1200
    made = fit_spec(good, schema, "quantile", 50, partitions=dict(acc.value))
    assert made == fit_spec(good, schema, "quantile", 50)
    grades = next(c for c in made["columns"] if c["name"] == "grade")
    assert None in grades["categories"] and abs(sum(grades["frequencies"]) - 1.0) < 1e-9
    pool = acc.value[SAMPLE]  # 500 rows of the 1,200, drawn from every partition, none twice
    ids = set(zip(pool.column("__pid").to_pylist(), pool.column("__i").to_pylist()))
    assert pool.num_rows == len(ids) == 500 and len(set(pool.column("__pid").to_pylist())) == n
    assert set(pool.column_names) == {c.name for c in sampled} | {"__u", "__i", "__pid"}
    assert validate(records, (plan, acc)).count() == 1201  # every task runs again
    parts = {k: v for k, v in acc.value.items() if k != SAMPLE}
    assert sorted(parts) == list(range(n)) and sum(p["rows"] for p in parts.values()) == 1200
    again = acc.value[SAMPLE]  # the same rows, not their copies added
    assert again.num_rows == 500 and set(zip(again.column("__pid").to_pylist(), again.column("__i").to_pylist())) == ids

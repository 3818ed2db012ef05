"""Real tables this project was never written for, end to end through ``run --data`` with an
inferred schema: US airports (CSV: a unique code, high-cardinality names with quoted commas,
missing states) and the raw Palmer penguins (Parquet: a date column, nulls in many columns, a
Yes/No string column, a mostly-null comment). Both ship inside permissively licensed wheels
(``kinds/table/datasets.py``). Each asserts what a new user's table can break: the inferred kinds,
rows in = written + quarantined, generated rows with every input column in its original type,
null shares, fresh unique identifiers, and score writing every row of the held-out test split."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from gen_pipeline.cli import main
from gen_pipeline.kinds.table.datasets import fetch_penguins_raw, fetch_vega_airports, fetch_vega_seattle_weather
from gen_pipeline.kinds.table.schema import TableSchema

pytestmark = [pytest.mark.jobs, pytest.mark.slow]

# test-sized training: bounds of its own (a 2-epoch model need not beat independent marginals)
TINY = ["--set", "train.epochs=2", "--set", "train.min_steps=0", "--set", "generate.rows=5000",
        "--set", "evaluate.max_detection_auc_gbt=1.0",
        "--set", "evaluate.reference_rows=false"]


def _datasets() -> Path:
    return Path(os.environ["GEN_PIPELINE_DATA_DIR"])


def _run(work: Path, data: Path, name: str, target: str | None = None, *more: str) -> None:
    args = ["run", "--data", str(data), "--name", name, "--work-dir", str(work), *TINY, *more]
    assert main([*args, *(["--target", target, "--set", "evaluate.min_tstr_auc_gbt=0.0"] if target else [])]) == 0


def _outputs(work: Path, name: str):
    schema = TableSchema.from_yaml(work / "schemas" / f"{name}.yaml")
    manifest = json.loads((work / "runs" / name / "preprocess" / "manifest.json").read_text())
    generated = pq.read_table(work / "outputs" / name / "generated")
    scored = pq.read_table(work / "outputs" / name / "scored").to_pandas()
    return schema, manifest, generated, scored


@pytest.fixture(scope="module")
def airports(spark, ray_cluster, tmp_path_factory):
    """The first 2,000 airports as CSV (the file's own bytes: quoting as shipped)."""
    w = tmp_path_factory.mktemp("airports")
    lines = fetch_vega_airports(_datasets()).read_text().splitlines(keepends=True)
    data = w / "airports.csv"
    data.write_text("".join(lines[:2001]))
    _run(w, data, "airports")
    return w, pacsv.read_csv(data).to_pandas()


@pytest.fixture(scope="module")
def penguins(spark, ray_cluster, tmp_path_factory):
    """The raw penguins as Parquet, typed as a user's warehouse would hold them."""
    w = tmp_path_factory.mktemp("penguins")
    table = pacsv.read_csv(fetch_penguins_raw(_datasets()),
                           convert_options=pacsv.ConvertOptions(null_values=["NA"], strings_can_be_null=True, column_types={
                               "Date Egg": pa.date32(), "Sample Number": pa.int64()}))
    data = w / "penguins.parquet"
    pq.write_table(table, data)
    # 270 training rows: small batches and 1,700 steps (in memory: no per-epoch Ray Data start), so
    # that the null shares are learned; 10 epochs of 170 steps, as each epoch ends in a checkpoint
    _run(w, data, "penguins", "Species", "--set", "train.epochs=10", "--set", "train.min_steps=1700",
         "--set", "train.batch_size=16", "--set", "train.loader=memory", "--set", "train.num_workers=1")
    return w, table


def test_airports_csv_end_to_end(airports):
    work, real = airports
    schema, manifest, generated, scored = _outputs(work, "airports")
    kinds = {c.name: c.kind for c in schema.columns}
    assert kinds["iata"] == "identifier"  # unique short codes
    assert kinds["name"] == kinds["city"] == kinds["state"] == "categorical"  # names and cities: high cardinality
    assert kinds["latitude"] == kinds["longitude"] == "continuous"
    assert manifest["rows_in"] == len(real) == manifest["rows_written"] + manifest["rows_quarantined"]
    assert manifest["rows_quarantined"] == 0  # quoted names with commas are one field, not two
    df = generated.to_pandas()
    assert list(df.columns) == list(real.columns) and len(df) == 5000
    assert {f.name: str(f.type) for f in generated.schema} == {
        **{c: "string" for c in ("iata", "name", "city", "state", "country")}, "latitude": "double", "longitude": "double"}
    assert df["iata"].is_unique and not set(df["iata"]) & set(real["iata"])  # fresh ids, never a real one
    assert set(df["name"].dropna()) <= set(real["name"])  # names only from the training vocabulary
    assert df["latitude"].between(real["latitude"].min(), real["latitude"].max()).all()
    held_out = manifest["splits"]["test"]  # score's default for a user table: its held-out test split
    assert 0 < len(scored) == held_out and scored["score"].notna().sum() + scored["reason"].notna().sum() == held_out
    assert scored["score"].notna().mean() > 0.9


def test_penguins_parquet_end_to_end(penguins):
    work, real_table = penguins
    real = real_table.to_pandas()
    schema, manifest, generated, scored = _outputs(work, "penguins")
    kinds = {c.name: c.kind for c in schema.columns}
    assert kinds["Date Egg"] == "date" and kinds["Region"] == kinds["Stage"] == "constant"
    assert kinds["Delta 15 N (o/oo)"] == "continuous" and kinds["Species"] == kinds["Individual ID"] == "categorical"
    assert manifest["rows_in"] == len(real) == manifest["rows_written"] + manifest["rows_quarantined"]
    # every input column, in its original Parquet type (a Yes/No string stays a string)
    assert generated.schema.remove_metadata().equals(real_table.schema.remove_metadata()), generated.schema
    df = generated.to_pandas()
    dates = df["Date Egg"].dropna()
    assert dates.min() >= real["Date Egg"].min() and dates.max() <= real["Date Egg"].max()
    assert set(df["Clutch Completion"].dropna()) <= {"Yes", "No"}
    assert (df["Stage"] == "Adult, 1 Egg Stage").all()  # a constant with a quoted comma stays constant
    assert set(df["Species"]) <= set(real["Species"])
    real_null, gen_null = real.isna().mean(), df.isna().mean()  # the share of nulls per column
    assert real_null["Comments"] > 0.8 and real_null["Culmen Length (mm)"] < 0.01
    for c in ("Comments", "Sex", "Culmen Length (mm)", "Delta 15 N (o/oo)"):
        assert abs(gen_null[c] - real_null[c]) < 0.1, (c, real_null[c], gen_null[c])
    held_out = manifest["splits"]["test"]  # score's default for a user table: its held-out test split
    assert 0 < len(scored) == held_out and scored["score"].notna().sum() + scored["reason"].notna().sum() == held_out


def test_slashed_dates_are_inferred_as_dates(spark, tmp_path):
    """Seattle weather's ``2012/01/01`` days are dates, not an identifier (inference only)."""
    from gen_pipeline.kinds.table.inference import infer_schema, sample_table

    sample, types, opts = sample_table(spark, str(fetch_vega_seattle_weather(_datasets())))
    schema, why = infer_schema(sample, types, opts)
    col = {c.name: c for c in schema.columns}["date"]
    assert (col.kind, col.dtype, col.format) == ("date", "date", "yyyy/MM/dd"), why["date"]
    assert {c.name: c.kind for c in schema.columns}["weather"] == "categorical"
    assert dt.date(2012, 1, 1) == dt.datetime.strptime(sample["date"][0], "%Y/%m/%d").date()

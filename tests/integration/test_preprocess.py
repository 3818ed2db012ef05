"""Preprocess on Spark over a real slice of Adult plus a file of bad lines."""

import json

import pyarrow.parquet as pq
import pytest

from gen_pipeline.kinds.table.datasets import ADULT_SCHEMA, RawTable
from gen_pipeline.kinds.table import TABLE
from gen_pipeline.layout import PreprocessOutput, vector_matrix
from gen_pipeline.stages.preprocess import run_preprocess
from gen_pipeline.kinds.table.transforms import TableTransformer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def table(adult_dir, adult_lines, tmp_path_factory):
    d = tmp_path_factory.mktemp("raw")
    (d / "slice.data").write_text("\n".join(adult_lines[:1200]) + "\n\n")  # a blank line is not a row
    good = adult_lines[0]
    bad = [
        "| a comment line",
        good.replace("39,", "abc,", 1),
        "39, State-gov, 77516",
        good.replace(", 40,", ", inf,"),
        adult_lines[1],
    ]
    (d / "bad.data").write_text("\n".join(bad) + "\n")
    return RawTable("adult", (d / "slice.data", d / "bad.data"), ADULT_SCHEMA)


@pytest.fixture(scope="module")
def output(spark, table, tiny_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "preprocess"
    cfg = tiny_config.model_copy(update={"data": tiny_config.data.model_copy(update={"max_rows_per_file": None})})
    manifest = run_preprocess(spark, cfg, None, out, records=TABLE.read_files(spark, cfg, table))
    return out, manifest


def test_rows_reconcile_and_bad_rows_are_quarantined_with_reasons(output):
    out, manifest = output
    assert manifest["rows_in"] == 1200 + 4  # the comment and blank lines are not data
    assert manifest["rows_quarantined"] == 3
    assert manifest["rows_in"] == manifest["rows_written"] + manifest["rows_quarantined"]
    assert sum(manifest["splits"].values()) == manifest["rows_written"]
    q = pq.read_table(out / "quarantine").to_pandas().sort_values("line")
    assert q["source"].tolist() == ["bad.data"] * 3 and q["line"].tolist() == [2, 3, 4]
    assert "column age" in q["reason"].iloc[0] and "expected 15 fields" in q["reason"].iloc[1]
    assert "column hours_per_week" in q["reason"].iloc[2]
    per_file = {i["path"].split("/")[-1]: i for i in manifest["inputs"]}
    assert per_file["bad.data"]["rows_quarantined"] == 3 and per_file["slice.data"]["bytes"] > 0
    assert "sha256" not in per_file["slice.data"] and per_file["slice.data"]["modified"]  # from the listing


def test_encoded_parquet_matches_the_spec_and_splits_add_up(output):
    out, manifest = output
    t = TableTransformer.load(out / "transform_spec.json")
    assert t.output_dim == manifest["encoded_dim"]
    total = 0
    for split, n in manifest["splits"].items():
        enc = pq.read_table(out / "encoded" / split)
        clean = PreprocessOutput(out).read_clean(split)
        assert enc.num_rows == len(clean) == n
        assert str(enc.schema.field("features").type) == "binary"  # each row's float32s, layout.vector_binary
        total += n
        if n:
            x = vector_matrix(enc.column("features"))
            assert x.shape[1] == t.output_dim
            # every categorical span is exactly one-hot
            for s in t.spans:
                if s.kind == "categorical":
                    assert (x[:, s.start:s.end].sum(1) == 1).all()
    assert total == manifest["rows_written"]
    assert manifest["splits"]["train"] > manifest["splits"]["test"] > 0


def test_vocabulary_and_missing_values_come_from_the_data(output):
    out, _ = output
    spec = json.loads((out / "transform_spec.json").read_text())
    cols = {c["name"]: c for c in spec["columns"]}
    assert set(cols["sex"]["categories"]) == {"Male", "Female"}
    assert None in cols["occupation"]["categories"]  # '?' became the missing category
    assert cols["age"]["min"] >= 17 and cols["age"]["quantiles"][0] == cols["age"]["min"]


def test_rerun_is_deterministic_and_replaces_the_output(spark, table, tiny_config, output):
    out, manifest = output
    cfg = tiny_config.model_copy(update={"data": tiny_config.data.model_copy(update={"max_rows_per_file": None})})
    before = PreprocessOutput(out).read_clean("train")
    again = run_preprocess(spark, cfg, None, out, records=TABLE.read_files(spark, cfg, table))
    assert again["splits"] == manifest["splits"] and again["fingerprint"] == manifest["fingerprint"]
    assert PreprocessOutput(out).read_clean("train").equals(before)  # the same rows in the same order
    assert not list(out.parent.glob(".preprocess.*"))  # no staging or old copies left behind
    assert not (out / "_records").exists()  # the validated records were scratch


def test_the_spark_shuffle_path_writes_what_the_record_files_path_writes(spark, table, tiny_config, output,
                                                                         tmp_path):
    """A ``train_where`` (a Spark expression) sends the rows through Spark's shuffle and sort
    instead of from the validation pass's files: the same rows of each split, encoded the same,
    in at least ``num_files`` files either way."""
    out, _ = output
    data = tiny_config.data.model_copy(update={"max_rows_per_file": None, "train_where": "1 = 1"})
    cfg = tiny_config.model_copy(update={"data": data})
    run_preprocess(spark, cfg, None, tmp_path / "pre", records=TABLE.read_files(spark, cfg, table))
    a, b = PreprocessOutput(out), PreprocessOutput(tmp_path / "pre")
    for split in ("train", "validation", "test"):
        rows = [x.read_clean(split) for x in (a, b)]
        assert len(rows[0]) > 0 and len(list(a.clean(split).glob("part-*.parquet"))) >= cfg.data.num_files
        order = [r.sort_values(list(r.columns)).reset_index(drop=True) for r in rows]
        assert order[0].equals(order[1])
        vectors = [vector_matrix(pq.read_table(x.encoded(split)).column("features")) for x in (a, b)]
        assert sorted(map(bytes, vectors[0])) == sorted(map(bytes, vectors[1]))


def test_train_fraction_keeps_a_share_of_train_and_the_fit_sees_that_share_only(spark, table, tiny_config, output,
                                                                                tmp_path):
    """``train_fraction``: a seeded share of the train split is written, the rest counted as left
    out, and the encoding is fitted on the rows kept, whether the validation pass summarises
    them on the way (the record files' path) or a pass of their own does (with ``train_where``)."""
    out, full = output

    def run(name: str, **data):
        cfg = tiny_config.model_copy(update={"data": tiny_config.data.model_copy(
            update={"max_rows_per_file": None, "train_fraction": 0.5, **data})})
        return run_preprocess(spark, cfg, None, tmp_path / name, records=TABLE.read_files(spark, cfg, table))

    half, where = run("half"), run("where", train_where="1 = 1")
    assert half["rows_left_out_by_train_fraction"] == full["splits"]["train"] - half["splits"]["train"] > 100
    assert half["rows_in"] == half["rows_written"] + half["rows_quarantined"] + half["rows_left_out_by_train_fraction"]
    assert {s: half["splits"][s] for s in ("validation", "test")} == {s: full["splits"][s] for s in ("validation", "test")}
    rows = {k: PreprocessOutput(p).read_clean("train") for k, p in
            (("full", out), ("half", tmp_path / "half"), ("where", tmp_path / "where"))}
    key = list(rows["full"].columns)
    kept = rows["half"].merge(rows["full"].drop_duplicates(), on=key, how="left", indicator=True)
    assert (kept["_merge"] == "both").all()  # a subset of the full train split
    assert rows["half"].sort_values(key).reset_index(drop=True).equals(rows["where"].sort_values(key).reset_index(drop=True))
    specs = {k: json.loads((p / "transform_spec.json").read_text())
             for k, p in (("full", out), ("half", tmp_path / "half"), ("where", tmp_path / "where"))}
    assert specs["half"]["columns"] == specs["where"]["columns"] != specs["full"]["columns"]

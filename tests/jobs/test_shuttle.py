"""Anomaly scoring end to end on a real slice of ODDS Shuttle: a label column is carried, not modelled."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gen_pipeline.cli import main

pytestmark = [pytest.mark.jobs, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "shuttle_tvae_tiny.yaml")


@pytest.fixture(scope="module")
def work(spark, ray_cluster, tmp_path_factory):
    w = tmp_path_factory.mktemp("shuttle")
    for stage in ("preprocess", "train", "evaluate"):
        assert main([stage, "--config", TINY, "--work-dir", str(w)]) == 0
    return w


def test_train_split_keeps_only_normal_rows_and_counts_reconcile(work):
    pre = work / "runs" / "shuttle_tvae_tiny" / "preprocess"
    manifest = json.loads((pre / "manifest.json").read_text())
    assert manifest["rows_in"] == 6000  # the header line is not a row
    assert manifest["rows_excluded"] > 0 and manifest["excluded_by"] == "anomaly = 0"
    assert manifest["rows_in"] == manifest["rows_written"] + manifest["rows_quarantined"] + manifest["rows_excluded"]
    assert set(pq.read_table(pre / "clean" / "train").column("anomaly").to_pylist()) == {0}
    assert 1 in set(pq.read_table(pre / "clean" / "test").column("anomaly").to_pylist())
    spec = json.loads((pre / "transform_spec.json").read_text())
    assert [c["name"] for c in spec["columns"]] == [f"f{i}" for i in range(1, 10)]  # the label is not modelled


def test_score_ranks_anomalies_and_keeps_the_label(work):
    out = work / "scored"
    assert main(["score", "--config", TINY, "--work-dir", str(work), "--out", str(out)]) == 0
    lineage = json.loads((out / "_lineage.json").read_text())
    assert lineage["rows_in"] == 49_097 == lineage["rows_scored"] + lineage["rows_rejected"]
    assert lineage["roc_auc_anomaly"] > 0.9
    df = pq.read_table(out).to_pandas()
    assert "anomaly" in df.columns and df["score"].notna().mean() > 0.99


def test_generate_writes_model_columns_only(work):
    out = work / "generated"
    assert main(["generate", "--config", TINY, "--work-dir", str(work), "--out", str(out)]) == 0
    assert pq.read_table(out).column_names == [f"f{i}" for i in range(1, 10)]

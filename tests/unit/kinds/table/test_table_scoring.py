"""Scoring without Spark: a parsed batch becomes rows with a score or a reason (never both, never
neither), and the job's ROC-AUC from a score histogram agrees with the exact one."""

import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.metrics import roc_auc_score

from gen_pipeline.bundle import ModelBundle
from gen_pipeline.config import PipelineConfig
from gen_pipeline.models import build_model
from gen_pipeline.kinds.table.schema import Column, TableSchema, parse_table
from gen_pipeline.kinds.table.scoring import score_table
from gen_pipeline.scores import AUC_BINS_PER_UNIT, auc_from_histogram
from gen_pipeline.kinds.table.transforms import TableTransformer

SCHEMA = TableSchema(columns=(Column("age", "continuous", "int"), Column("sex", "categorical", "string"),
                              Column("anomaly", "label", "int")))


def _bundle() -> ModelBundle:
    spec = {"version": 2, "schema": SCHEMA.to_dict(), "fitted_rows": 100, "columns": [
        {"name": "age", "kind": "continuous", "dtype": "int", "method": "standard", "min": 17.0, "max": 90.0,
         "mean": 40.0, "std": 10.0, "has_nulls": False},
        {"name": "sex", "kind": "categorical", "dtype": "string", "categories": ["Male", "Female"],
         "frequencies": [0.6, 0.4]}]}
    cfg = PipelineConfig(name="t", model_name="t", model={"family": "tvae", "latent_dim": 2, "hidden_dims": [8]})
    t = TableTransformer(spec)
    torch.manual_seed(0)
    return ModelBundle(cfg, spec, build_model(cfg.model, t.spans, t.output_dim).state_dict())


def test_score_table_gives_each_row_a_score_or_a_reason():
    texts = ["39,Male,0", "50,Female,1", "x,Male,0", "41,Alien,0", "1,2", "", "77,Female,1"]
    lines = pa.table({"source": ["f"] * len(texts), "line": list(range(1, len(texts) + 1)), "text": texts})
    out = score_table(_bundle(), parse_table(lines, SCHEMA), SCHEMA).to_pandas()
    assert out["line"].tolist() == [1, 2, 3, 4, 5, 7]  # the blank line is not data
    assert list(out.columns) == ["source", "line", "age", "sex", "anomaly", "score", "reason"]
    scored = out["score"].notna()
    assert (scored ^ out["reason"].notna()).all()  # exactly one of the two per row
    assert scored.tolist() == [True, True, False, False, False, True]
    reasons = out["reason"].tolist()
    assert "'x' is not a number" in reasons[2] and "unseen category 'Alien'" in reasons[3]
    assert "expected 3 fields" in reasons[4]
    assert out.loc[scored, "anomaly"].tolist() == [0, 1, 1]  # the label rides along, not modelled


def test_histogram_auc_is_the_mann_whitney_auc():
    rng = np.random.default_rng(0)
    y = rng.random(20_000) < 0.07
    s = np.round(rng.normal(0, 1, y.size) + 1.5 * y, 2)  # rounded: many ties
    bins, inverse = np.unique(s, return_inverse=True)
    pos = np.bincount(inverse, weights=y, minlength=len(bins))
    neg = np.bincount(inverse, weights=~y, minlength=len(bins))
    assert auc_from_histogram(bins, pos, neg) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # as the job bins it: asinh(score) in 1/AUC_BINS_PER_UNIT steps, on scores spread like nats
    s = np.exp(rng.normal(3, 1, y.size) + y)
    b = np.floor(np.arcsinh(s) * AUC_BINS_PER_UNIT)
    bins, inverse = np.unique(b, return_inverse=True)
    pos = np.bincount(inverse, weights=y, minlength=len(bins))
    neg = np.bincount(inverse, weights=~y, minlength=len(bins))
    assert auc_from_histogram(bins, pos, neg) == pytest.approx(roc_auc_score(y, s), abs=1e-4)
    assert np.isnan(auc_from_histogram(bins, pos * 0, neg))  # one class only: undefined


def test_task_summaries_merge_into_counts_quantiles_and_auc():
    from gen_pipeline.scores import ScoreSummary

    rng = np.random.default_rng(1)
    n = 50_000
    y = (rng.random(n) < 0.07).astype(np.int64)
    s = np.exp(rng.normal(3, 1, n) + y)  # nats-like, anomalies higher
    s[:100] = np.nan  # rows with a reason: counted, not scored
    table = pa.table({"score": s, "anomaly": pa.array(y)})
    parts = []
    for lo, hi in ((0, 20_000), (20_000, n)):  # two tasks
        part = ScoreSummary(["anomaly"])
        part.add(table.slice(lo, hi - lo))
        parts.append(part.to_json())
    merged = ScoreSummary.merge(parts, ["anomaly"])
    assert (merged.rows, merged.scored) == (n, n - 100)
    ok = ~np.isnan(s)
    q50, q99 = merged.quantiles((0.5, 0.99))
    assert q50 == pytest.approx(np.quantile(s[ok], 0.5), rel=2e-3)
    assert q99 == pytest.approx(np.quantile(s[ok], 0.99), rel=2e-3)
    assert merged.roc_aucs()["roc_auc_anomaly"] == pytest.approx(roc_auc_score(y[ok], s[ok]), abs=1e-4)
    assert ScoreSummary(["anomaly"]).quantiles((0.5,)) is None and ScoreSummary(["anomaly"]).roc_aucs() == {}

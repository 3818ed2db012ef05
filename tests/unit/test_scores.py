"""The score job's ROC-AUC from a score histogram agrees with the exact one (no Spark)."""

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from gen_pipeline.scores import AUC_BINS_PER_UNIT, auc_from_histogram



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

import time

import numpy as np
import pandas as pd
import pytest

from gen_pipeline.kinds.table.metrics import (association_matrix, detection_auc, exact_copy_share, sdmetrics_quality,
                                              tabular_report)
from gen_pipeline.kinds.table.report import report_figures, report_html
from gen_pipeline.kinds.table.schema import Column, TableSchema

SCHEMA = TableSchema(columns=(Column("a", "continuous", "float"), Column("b", "continuous", "float"),
                              Column("c", "categorical", "string")))
# A small mixed table with a label the other columns predict, the shape of Adult's income.
TABLE = TableSchema(columns=(Column("x", "continuous", "float"), Column("n", "continuous", "int"),
                             Column("g", "categorical", "string"), Column("y", "categorical", "string"),
                             Column("flag", "label", "int")))


def _frame(n, shift=0.0, corr=0.8, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(shift, 1, n)
    b = corr * a + np.sqrt(1 - corr**2) * rng.normal(0, 1, n)
    c = np.where(a > 0, "x", "y")
    return pd.DataFrame({"a": a, "b": b, "c": c})


def _table(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n)
    g = rng.choice(["p", "q", "r", None], n, p=[0.4, 0.3, 0.2, 0.1])
    n_ = rng.poisson(3 + 2 * (g == "p"), n)
    logit = 2.0 * x + 1.5 * (g == "p") - 0.3 * n_ - 0.5
    y = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return pd.DataFrame({"x": x, "n": pd.array(n_, dtype="Int64"), "g": g, "y": y, "flag": 0})


def test_quality_is_high_for_the_same_distribution_and_drops_for_a_shift():
    real = _frame(3000)
    same = sdmetrics_quality(real, _frame(3000, seed=1), SCHEMA)
    shifted = sdmetrics_quality(real, _frame(3000, shift=1.0, seed=1), SCHEMA)
    assert same["quality_score"] > 0.9 and min(same["shape_a"], same["shape_c"]) > 0.9
    assert shifted["shape_a"] < 0.7 and shifted["column_shapes"] < same["column_shapes"] - 0.2


def test_pair_trends_see_a_broken_correlation():
    real = _frame(3000)
    kept = sdmetrics_quality(real, _frame(3000, seed=1), SCHEMA)["column_pair_trends"]
    broken = sdmetrics_quality(real, _frame(3000, corr=-0.8, seed=1), SCHEMA)["column_pair_trends"]
    assert kept > 0.8 and broken < kept - 0.2


def test_detection_auc_tells_apart_only_different_data():
    rng = np.random.default_rng(0)
    real = rng.normal(0, 1, (1000, 4))
    assert detection_auc(real, rng.normal(0, 1, (1000, 4))) < 0.6
    assert detection_auc(real, rng.normal(1.5, 1, (1000, 4))) > 0.85


def test_copies_of_the_training_rows_are_flagged_and_new_rows_are_not():
    train, holdout = _table(2000, seed=0), _table(600, seed=1)
    copied = tabular_report(train, holdout, train.sample(1000, random_state=3), TABLE, max_rows=600)
    fresh = tabular_report(train, holdout, _table(1000, seed=2), TABLE, max_rows=600)
    assert copied["exact_copy_share"] == 1.0 and copied["dcr_median"] == 0.0 and copied["dcr_ratio"] == 0.0
    assert fresh["exact_copy_share"] < 0.01 and fresh["dcr_median"] > 0.0
    # new rows from the same distribution sit as far from the training rows as the real holdout
    assert 0.7 < fresh["dcr_ratio"] < 1.4 and copied["holdout_exact_copy_share"] < 0.01


def test_exact_copies_compare_every_column_with_missing_equal_to_missing():
    train = pd.DataFrame({"n": pd.array([1, None, 3], dtype="Int64"), "g": ["a", None, "c"]})
    rows = pd.DataFrame({"n": pd.array([1, None, 3, 3], dtype="Int64"), "g": ["a", None, "a", None]})
    assert exact_copy_share(rows, train, ["n", "g"]) == 0.5


def test_tstr_matches_the_real_row_for_real_rows_and_drops_for_noise():
    train, holdout = _table(3000, seed=0), _table(1500, seed=1)
    real_like = tabular_report(train, holdout, _table(3000, seed=2), TABLE, "y", "yes", max_rows=1500)
    noise = _table(3000, seed=2).assign(y=lambda d: d["y"].sample(frac=1, random_state=0).to_numpy())
    broken = tabular_report(train, holdout, noise, TABLE, "y", "yes", max_rows=2000)
    assert real_like["trtr_f1_mean"] > 0.6
    assert abs(real_like["tstr_f1_mean"] - real_like["trtr_f1_mean"]) < 0.05
    assert broken["tstr_f1_mean"] < real_like["trtr_f1_mean"] - 0.15
    assert broken["tstr_accuracy_mean"] < real_like["trtr_accuracy_mean"] - 0.1
    for side in ("tstr", "trtr"):
        for clf in ("decision_tree", "adaboost", "logistic_regression", "mlp"):
            assert 0.0 <= real_like[f"{side}_f1_{clf}"] <= 1.0 and 0.0 <= real_like[f"{side}_accuracy_{clf}"] <= 1.0


def test_tstr_is_skipped_without_a_label_and_for_a_label_never_generated():
    train, holdout = _table(1500, seed=0), _table(500, seed=1)
    synth = _table(800, seed=2).drop(columns=["flag"])  # label columns are not generated
    for label in (None, "flag"):
        m = tabular_report(train, holdout, synth, TABLE, label, max_rows=500)
        assert not [k for k in m if k.startswith(("tstr_", "trtr_"))]
        assert 0.0 <= m["quality_score"] <= 1.0 and m["exact_copy_share"] == 0.0


def test_association_matrix_sees_a_broken_dependency():
    real = _frame(3000)
    kept = association_matrix(_frame(3000, seed=1), SCHEMA, real)
    broken = association_matrix(_frame(3000, corr=0.0, seed=1), SCHEMA, real)
    base = association_matrix(real, SCHEMA)
    assert list(base.index) == ["a", "b", "c"] and np.allclose(np.diag(base), 1.0)
    assert abs(kept.loc["a", "b"] - base.loc["a", "b"]) < 0.05
    assert base.loc["a", "b"] > 0.3 and broken.loc["a", "b"] < 0.1


def test_a_zero_spiked_column_keeps_its_association():
    rng = np.random.default_rng(0)
    g = rng.choice(["a", "b"], 2000)
    gain = np.where((g == "a") & (rng.random(2000) < 0.3), rng.exponential(1000, 2000), 0.0)  # like capital_gain
    schema = TableSchema(columns=(Column("gain", "continuous", "float"), Column("g", "categorical", "string")))
    assert association_matrix(pd.DataFrame({"gain": gain, "g": g}), schema).loc["gain", "g"] > 0.25


def test_report_has_the_figures_and_the_efficacy_table():
    import matplotlib.pyplot as plt

    train, holdout = _table(1500, seed=0), _table(500, seed=1)
    synth = _table(800, seed=2)
    metrics = tabular_report(train, holdout, synth, TABLE, "y", max_rows=500)
    figures = report_figures(holdout, synth, TABLE)
    assert set(figures) == {"marginals_real_vs_synthetic", "association_difference"}
    html = report_html(metrics, figures, "t")
    assert html.count("<img src='data:image/png;base64,") == 2 and "adaboost" in html and "dcr_median" in html
    assert f"{metrics['tstr_f1_mean']:.4f}" in html
    assert not plt.get_fignums()  # the report closed its figures


def test_a_tstr_bound_needs_a_label():
    from pydantic import ValidationError

    from gen_pipeline.config import EvaluateConfig

    with pytest.raises(ValidationError, match="tstr_label"):
        EvaluateConfig(min_tstr_f1=0.5)
    assert EvaluateConfig(min_tstr_f1=0.5, tstr_label="income").min_tstr_f1 == 0.5

import numpy as np
import pandas as pd

from gen_pipeline.evaluate import column_pair_trends, column_shapes, detection_auc, gate
from gen_pipeline.schema import Column, TableSchema

SCHEMA = TableSchema(columns=(Column("a", "continuous", "float"), Column("b", "continuous", "float"),
                              Column("c", "categorical", "string")))


def _frame(n, shift=0.0, corr=0.8, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(shift, 1, n)
    b = corr * a + np.sqrt(1 - corr**2) * rng.normal(0, 1, n)
    c = np.where(a > 0, "x", "y")
    return pd.DataFrame({"a": a, "b": b, "c": c})


def test_same_distribution_scores_near_one_and_shift_scores_lower():
    real = _frame(3000)
    same = column_shapes(real, _frame(3000, seed=1), SCHEMA)
    shifted = column_shapes(real, _frame(3000, shift=1.0, seed=1), SCHEMA)
    assert min(same.values()) > 0.95
    assert shifted["a"] < 0.7 and shifted["c"] < 0.8


def test_pair_trends_see_a_broken_correlation():
    real = _frame(3000)
    assert column_pair_trends(real, _frame(3000, seed=1), SCHEMA) > 0.95
    assert column_pair_trends(real, _frame(3000, corr=-0.8, seed=1), SCHEMA) < 0.8


def test_detection_auc_tells_apart_only_different_data():
    rng = np.random.default_rng(0)
    real = rng.normal(0, 1, (1000, 4))
    assert detection_auc(real, rng.normal(0, 1, (1000, 4))) < 0.6
    assert detection_auc(real, rng.normal(1.5, 1, (1000, 4))) > 0.85


def test_gate_needs_minimum_and_improvement():
    assert gate({"q": 0.4}, None, "q", 0.5)[0] is False
    assert gate({"q": 0.6}, None, "q", 0.5)[0] is True
    ok, reason = gate({"q": 0.6}, {"q": 0.7}, "q", 0.5)
    assert ok is False and "does not beat" in reason
    assert gate({"q": 0.75}, {"q": 0.7}, "q", 0.5)[0] is True

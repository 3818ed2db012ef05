import numpy as np
import pandas as pd

from gen_pipeline.evaluate import detection_auc, gate, sdmetrics_quality
from gen_pipeline.schema import Column, TableSchema

SCHEMA = TableSchema(columns=(Column("a", "continuous", "float"), Column("b", "continuous", "float"),
                              Column("c", "categorical", "string")))


def _frame(n, shift=0.0, corr=0.8, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(shift, 1, n)
    b = corr * a + np.sqrt(1 - corr**2) * rng.normal(0, 1, n)
    c = np.where(a > 0, "x", "y")
    return pd.DataFrame({"a": a, "b": b, "c": c})


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


def test_gate_needs_minimum_and_improvement():
    assert gate({"q": 0.4}, None, "q", 0.5)[0] is False
    assert gate({"q": 0.6}, None, "q", 0.5)[0] is True
    ok, reason = gate({"q": 0.6}, {"q": 0.7}, "q", 0.5)
    assert ok is False and "does not beat" in reason
    assert gate({"q": 0.75}, {"q": 0.7}, "q", 0.5)[0] is True

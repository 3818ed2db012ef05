import numpy as np
import pandas as pd
import pytest

from gen_pipeline.kinds.table.detection import (balanced, gbt_detection_auc, gbt_metrics, gbt_utility_auc, independent_marginals,
                                    ordinal_features)
from gen_pipeline.kinds.table.metrics import (RowEncoder, association_matrix, detection_auc, exact_copy_share,
                                              reference_metrics, sdmetrics_quality, tabular_report)
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
    copied = tabular_report(train, holdout, train.sample(1000, random_state=3), TABLE, max_rows=600, gbt_max_rows=300)
    fresh = tabular_report(train, holdout, _table(1000, seed=2), TABLE, max_rows=600, gbt_max_rows=300)
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
    real_like = tabular_report(train, holdout, _table(3000, seed=2), TABLE, "y", "yes", max_rows=1500, gbt_max_rows=300)
    noise = _table(3000, seed=2).assign(y=lambda d: d["y"].sample(frac=1, random_state=0).to_numpy())
    broken = tabular_report(train, holdout, noise, TABLE, "y", "yes", max_rows=2000, gbt_max_rows=300)
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
        m = tabular_report(train, holdout, synth, TABLE, label, max_rows=500, gbt_max_rows=300)
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
    metrics = tabular_report(train, holdout, synth, TABLE, "y", max_rows=500, gbt_max_rows=300)
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


# ---- the papers' protocol: all pairs, gradient-boosted detection and utility, reference rows ----
# A table whose columns depend strongly on each other, the shape of Adult's sex / relationship /
# marital status: "Husband" only for married men, "Wife" only for married women.
FAMILY = TableSchema(columns=(Column("age", "continuous", "int"), Column("sex", "categorical", "string"),
                              Column("married", "categorical", "string"),
                              Column("relationship", "categorical", "string"),
                              Column("income", "categorical", "string")))


def _family(n, seed=0):
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    sex = rng.choice(["Male", "Female"], n, p=[0.67, 0.33])
    married = np.where(rng.random(n) < np.clip((age - 18) / 40, 0.05, 0.8), "yes", "no")
    relationship = np.where(married == "yes", np.where(sex == "Male", "Husband", "Wife"),
                            rng.choice(["Own-child", "Not-in-family", None], n, p=[0.45, 0.45, 0.1]))
    logit = -3.0 + 3.5 * (relationship == "Husband") + 2.5 * (relationship == "Wife") + 0.04 * (age - 40)
    income = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), ">50K", "<=50K")
    return pd.DataFrame({"age": pd.array(age, dtype="Int64"), "sex": sex, "married": married,
                         "relationship": relationship, "income": income})


def test_quality_over_all_pairs_sees_a_weak_pair_the_report_leaves_out():
    real = _frame(3000, corr=0.3)  # a-b below SDMetrics' 0.5 correlation threshold
    kept = sdmetrics_quality(real, _frame(3000, corr=0.3, seed=1), SCHEMA)
    flipped = sdmetrics_quality(real, _frame(3000, corr=-0.3, seed=1), SCHEMA)
    assert abs(kept["column_pair_trends"] - flipped["column_pair_trends"]) < 0.02  # only strong pairs count
    assert flipped["column_pair_trends_all_pairs"] < kept["column_pair_trends_all_pairs"] - 0.08
    assert kept["quality_score_all_pairs"] == pytest.approx((kept["column_shapes"]
                                                             + kept["column_pair_trends_all_pairs"]) / 2)


def test_ordinal_features_encode_over_the_union_with_missing_a_value():
    a = pd.DataFrame({"age": pd.array([30, None], dtype="Int64"), "sex": ["Male", None], "married": ["no", "no"],
                      "relationship": ["Husband", "Wife"], "income": ["<=50K", ">50K"]})
    b = a.assign(sex=["Female", "Other"])  # "Other" exists only in b: the codes cover both frames
    xa, xb = ordinal_features([a, b], FAMILY, exclude=("income",))
    assert xa.shape == (2, 4) and np.isnan(xa[1, 0]) and xa[0, 0] == 30
    codes = {v: i for i, v in enumerate(sorted(["Male", "<missing>", "Female", "Other"]))}
    assert list(xa[:, 1]) == [codes["Male"], codes["<missing>"]] and list(xb[:, 1]) == [codes["Female"], codes["Other"]]


def test_gbt_detection_separates_different_rows_and_not_a_resample():
    real = _table(1500, seed=0)
    assert abs(gbt_detection_auc(real, _table(1500, seed=1), TABLE) - 0.5) < 0.06
    shifted = _table(1500, seed=1).assign(x=lambda d: d["x"] + 2.5)
    assert gbt_detection_auc(real, shifted, TABLE) > 0.9


def test_trees_detect_independent_marginals_that_a_logistic_detector_passes():
    real, fresh = _family(2000, seed=0), _family(4000, seed=1)
    cols = [c.name for c in FAMILY.model_columns]
    marginals = independent_marginals(fresh, cols, 2000, seed=0)
    for c in cols:  # every marginal kept ...
        assert (marginals[c].astype(str).value_counts(normalize=True)
                - fresh[c].astype(str).value_counts(normalize=True)).abs().max() < 0.04
    # ... and every relation gone: female husbands
    assert ((marginals["sex"] == "Female") & (marginals["relationship"] == "Husband")).mean() > 0.05
    gbt_real, gbt_marg = gbt_detection_auc(real, fresh.iloc[:2000], FAMILY), gbt_detection_auc(real, marginals, FAMILY)
    enc = RowEncoder(real, FAMILY)
    logistic_marg = detection_auc(enc.transform(real), enc.transform(marginals))
    assert gbt_real < 0.56 and gbt_marg > 0.8 and logistic_marg < 0.6


def test_train_on_synthetic_auc_of_real_rows_matches_train_on_real_and_marginals_fall_to_chance():
    train, test = _family(2000, seed=0), _family(1500, seed=1)
    trtr = gbt_utility_auc(train, test, FAMILY, "income")
    real_like = gbt_utility_auc(_family(2000, seed=2), test, FAMILY, "income")
    cols = [c.name for c in FAMILY.model_columns]
    marg = gbt_metrics(train, test, independent_marginals(train, cols, 2000, 0), FAMILY, "income", max_rows=2000)
    assert trtr > 0.8 and abs(real_like - trtr) < 0.03
    assert marg["tstr_auc_gbt"] < 0.65 and marg["detection_auc_gbt"] > 0.8  # a model of noise: about 0.5


def test_utility_auc_is_one_vs_rest_macro_for_many_classes_and_half_for_one_learned_class():
    train, test = _family(2000, seed=0), _family(1000, seed=1)
    auc = gbt_utility_auc(train, test, FAMILY, "relationship")  # 3 classes + missing: sex and married tell most
    shuffled = train.assign(relationship=train["relationship"].sample(frac=1, random_state=0).to_numpy())
    assert auc > 0.85 and abs(gbt_utility_auc(shuffled, test, FAMILY, "relationship") - 0.5) < 0.06
    assert gbt_utility_auc(train.assign(income="<=50K"), test, FAMILY, "income") == 0.5


def test_gbt_figures_reproduce_with_the_seed():
    train, test, synth = _family(1000, seed=0), _family(500, seed=1), _family(1500, seed=3)
    a, b = (gbt_metrics(train, test, synth, FAMILY, "income", 800, seed=4) for _ in range(2))
    assert a == b and gbt_metrics(train, test, synth, FAMILY, "income", 800, seed=5) != a
    real, fake = balanced(train, synth, 800, 4)
    assert len(real) == len(fake) == 800 and fake.index.equals(balanced(train, synth, 800, 4)[1].index)
    cols = [c.name for c in FAMILY.model_columns]
    assert independent_marginals(train, cols, 300, 1).equals(independent_marginals(train, cols, 300, 1))
    assert not independent_marginals(train, cols, 300, 1).equals(independent_marginals(train, cols, 300, 2))


def test_reference_rows_are_the_floor_and_the_ceiling():
    train, test, holdout = _family(1500, seed=0), _family(800, seed=1), _family(800, seed=2)
    ref = reference_metrics(train, test, holdout, FAMILY, "income", max_rows=800, gbt_max_rows=1000, seed=4)
    # held-out real rows pass every test; independent marginals keep the shapes and fail the joint ones
    assert ref["ref_holdout_detection_auc_gbt"] < 0.6 < 0.8 < ref["ref_marginals_detection_auc_gbt"]
    assert ref["ref_holdout_tstr_auc_gbt"] > ref["ref_marginals_tstr_auc_gbt"] + 0.15
    assert ref["ref_holdout_quality_score_all_pairs"] > ref["ref_marginals_quality_score_all_pairs"] + 0.05
    assert ref["ref_holdout_quality_score"] > 0.85 and ref["reference_seconds"] > 0


def test_report_shows_the_protocol_beside_its_reference_rows():
    train, test = _family(800, seed=0), _family(400, seed=1)
    metrics = tabular_report(train, test, _family(800, seed=3), FAMILY, "income", ">50K", max_rows=400,
                             gbt_max_rows=600, real_holdout=None, reference_rows=True)
    for k in ("quality_score_all_pairs", "detection_auc_gbt", "tstr_auc_gbt", "trtr_auc_gbt",
              "ref_marginals_detection_auc_gbt", "ref_marginals_tstr_auc_gbt"):
        assert 0.0 <= metrics[k] <= 1.0, k
    assert not [k for k in metrics if k.startswith("ref_holdout_")]  # no held-out rows given: no such row
    html = report_html(metrics, {}, "t")
    assert "independent marginals" in html and "real held-out rows" in html
    for k in ("detection_auc_gbt", "ref_marginals_detection_auc_gbt", "ref_marginals_tstr_auc_gbt", "trtr_auc_gbt"):
        assert f"{metrics[k]:.4f}" in html


def test_the_metrics_see_datetimes_as_numbers_and_skip_identifiers_and_constants():
    from gen_pipeline.kinds.table.metrics import evaluation_view

    schema = TableSchema(columns=(Column("id", "identifier", "int"), Column("at", "datetime", "timestamp"),
                                  Column("ok", "boolean", "bool"), Column("k", "constant", "string"),
                                  Column("x", "continuous", "float")))
    df = pd.DataFrame({"id": [1, 2], "at": pd.to_datetime(["1970-01-01 00:01:00", None]), "ok": [True, None],
                       "k": ["a", "a"], "x": [0.5, 1.5]})
    view, (out,) = evaluation_view(schema, df)
    assert [(c.name, c.kind) for c in view.columns] == [("at", "continuous"), ("ok", "categorical"),
                                                        ("x", "continuous")]
    assert list(out.columns) == ["at", "ok", "x"] and out["at"].iloc[0] == 60.0 and pd.isna(out["at"].iloc[1])
    assert out["ok"].tolist() == ["True", None]


def test_the_metrics_see_instants_and_decimals_as_numbers():
    from decimal import Decimal

    from gen_pipeline.kinds.table.metrics import evaluation_view

    schema = TableSchema(columns=(Column("at", "datetime", "timestamp_ltz"),
                                  Column("amount", "continuous", "decimal(8,2)")))
    df = pd.DataFrame({"at": pd.to_datetime(["1970-01-01 01:01:00+01:00", None], utc=True),
                       "amount": [Decimal("1.25"), None]})
    view, (out,) = evaluation_view(schema, df)
    assert [(c.kind, c.dtype) for c in view.columns] == [("continuous", "float"), ("continuous", "float")]
    assert out["at"].iloc[0] == 60.0 and out["amount"].dtype == "float64" and out["amount"].iloc[0] == 1.25

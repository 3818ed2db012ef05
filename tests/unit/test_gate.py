"""The one promotion gate, for every kind: bounds, the primary metric's direction from the kind's
registry, the improvement margin, and the trivial-baseline bounds a kind adds by default."""

import pytest

from gen_pipeline.config import EvaluateConfig
from gen_pipeline.gate import bounds, gate
from gen_pipeline.kinds.image import IMAGE
from gen_pipeline.kinds.table import TABLE


def test_gate_needs_minimum_and_improvement():
    assert gate({"q": 0.4}, None, "q", False, {"q": 0.5})[0] is False
    assert gate({"q": 0.6}, None, "q", False, {"q": 0.5})[0] is True
    ok, reason = gate({"q": 0.6}, {"q": 0.7}, "q", False, {"q": 0.5})
    assert ok is False and "does not beat" in reason
    assert gate({"q": 0.75}, {"q": 0.7}, "q", False, {"q": 0.5})[0] is True


def test_gate_refuses_a_candidate_outside_any_bound_and_says_which():
    good = {"quality_score": 0.8, "tstr_f1_mean": 0.6, "exact_copy_share": 0.0, "detection_auc": 0.7}
    mins, maxs = {"quality_score": 0.5, "tstr_f1_mean": 0.55}, {"exact_copy_share": 0.01, "detection_auc": 0.9}
    assert gate(good, None, "quality_score", False, mins, maxs)[0] is True
    ok, reason = gate({**good, "tstr_f1_mean": 0.4}, None, "quality_score", False, mins, maxs)
    assert not ok and "tstr_f1_mean=0.4000 is below the minimum 0.5500" in reason
    ok, reason = gate({**good, "exact_copy_share": 0.2}, {**good, "quality_score": 0.1}, "quality_score", False, mins, maxs)
    assert not ok and "exact_copy_share=0.2000 is above the maximum 0.0100" in reason
    ok, reason = gate({k: v for k, v in good.items() if k != "tstr_f1_mean"}, None, "quality_score", False, mins, maxs)
    assert not ok and "tstr_f1_mean was not measured" in reason


def test_gate_knows_lower_is_better_for_detection():
    assert gate({"detection_auc": 0.6}, {"detection_auc": 0.7}, "detection_auc", TABLE.lower_is_better("detection_auc"))[0] is True
    assert gate({"detection_auc": 0.8}, {"detection_auc": 0.7}, "detection_auc", TABLE.lower_is_better("detection_auc"))[0] is False


def test_gate_wants_more_than_the_noise_margin():
    champ = {"quality_score": 0.870, "fid": 20.0}
    ok, reason = gate({"quality_score": 0.872}, champ, "quality_score", False, min_improvement=0.005)
    assert not ok and "by more than 0.0050" in reason
    assert gate({"quality_score": 0.876}, champ, "quality_score", False, min_improvement=0.005)[0] is True
    assert gate({"fid": 19.5}, champ, "fid", IMAGE.lower_is_better("fid"), min_improvement=1.0)[0] is False  # lower is better: 0.5 better
    assert gate({"fid": 18.5}, champ, "fid", IMAGE.lower_is_better("fid"), min_improvement=1.0)[0] is True


def test_an_image_model_at_chance_is_refused_with_a_reason():
    metrics = {"fid": 80.0, "conditional_accuracy": 0.12, "baseline_chance_accuracy": 0.1,
               "baseline_pixel_marginals_fid": 300.0}
    ev = EvaluateConfig()
    mins, maxs = bounds(ev, IMAGE.baseline_bounds(metrics, None, ev))
    assert mins == {"conditional_accuracy": pytest.approx(0.2)}
    ok, reason = gate(metrics, None, "fid", True, mins, maxs)
    assert not ok and reason == "conditional_accuracy=0.1200 is below the minimum 0.2000"
    ok, _ = gate({**metrics, "conditional_accuracy": 0.85}, None, "fid", True, mins, maxs)
    assert ok


def test_an_unconditional_image_model_must_beat_pixel_marginals_and_a_config_bound_wins():
    metrics = {"fid": 350.0, "baseline_pixel_marginals_fid": 300.0}
    ev = EvaluateConfig()
    mins, maxs = bounds(ev, IMAGE.baseline_bounds(metrics, None, ev))
    assert gate(metrics, None, "fid", True, mins, maxs) == (False, "fid=350.0000 is above the maximum 300.0000")
    mins, maxs = bounds(EvaluateConfig(max_fid=400.0), IMAGE.baseline_bounds(metrics, None, ev))
    assert maxs == {"fid": 400.0} and gate(metrics, None, "fid", True, mins, maxs)[0]


def test_the_image_gate_honours_primary_metric_and_min_improvement():
    champ = {"fid": 20.0, "conditional_accuracy": 0.85}
    cand = {"fid": 19.0, "conditional_accuracy": 0.80}
    assert gate(cand, champ, "fid", IMAGE.lower_is_better("fid"))[0] is True
    ok, reason = gate(cand, champ, "fid", IMAGE.lower_is_better("fid"), min_improvement=2.0)
    assert not ok and "does not beat the champion's 20.0000 by more than 2.0000" in reason
    ok, reason = gate(cand, champ, "conditional_accuracy", IMAGE.lower_is_better("conditional_accuracy"))
    assert not ok and "conditional_accuracy=0.8000 does not beat" in reason


def test_primary_metrics_come_from_the_kinds():
    from pydantic import ValidationError

    assert EvaluateConfig(primary_metric="conditional_accuracy").primary_metric == "conditional_accuracy"
    with pytest.raises(ValidationError, match="unknown metric 'fidd'"):
        EvaluateConfig(primary_metric="fidd")


def test_gate_and_config_know_the_protocol_metrics():
    from pydantic import ValidationError

    from gen_pipeline.gate import configured_bounds

    assert gate({"detection_auc_gbt": 0.7}, {"detection_auc_gbt": 0.8}, "detection_auc_gbt",
                TABLE.lower_is_better("detection_auc_gbt"))[0] is True
    assert gate({"tstr_auc_gbt": 0.7}, {"tstr_auc_gbt": 0.8}, "tstr_auc_gbt", TABLE.lower_is_better("tstr_auc_gbt"))[0] \
        is False
    ev = EvaluateConfig(primary_metric="detection_auc_gbt", max_detection_auc_gbt=0.9, min_tstr_auc_gbt=0.8,
                        min_quality_score_all_pairs=0.9, tstr_label="income")
    mins, maxs = configured_bounds(ev)
    assert maxs["detection_auc_gbt"] == 0.9 and mins["tstr_auc_gbt"] == 0.8 and mins["quality_score_all_pairs"] == 0.9
    ok, reason = gate({"quality_score": 0.9, "quality_score_all_pairs": 0.95, "tstr_auc_gbt": 0.85,
                       "detection_auc_gbt": 0.95}, None, ev.primary_metric, True, mins, maxs)
    assert not ok and "detection_auc_gbt=0.9500 is above the maximum 0.9000" in reason
    with pytest.raises(ValidationError, match="tstr_label"):
        EvaluateConfig(min_tstr_auc_gbt=0.8)
    with pytest.raises(ValidationError, match="tstr_label"):
        EvaluateConfig(primary_metric="tstr_auc_gbt")


def test_a_table_must_beat_independent_marginals_on_gradient_boosted_detection_and_utility():
    metrics = {"quality_score": 0.9, "detection_auc_gbt": 0.995, "tstr_auc_gbt": 0.80,
               "ref_marginals_detection_auc_gbt": 0.99, "ref_marginals_tstr_auc_gbt": 0.51}
    ev = EvaluateConfig(tstr_label="income")
    mins, maxs = bounds(ev, TABLE.baseline_bounds(metrics, None, ev))
    assert maxs == {"detection_auc_gbt": 0.99} and mins == {"tstr_auc_gbt": pytest.approx(0.56)}
    ok, reason = gate(metrics, None, "quality_score", False, mins, maxs)
    assert not ok and reason == "detection_auc_gbt=0.9950 is above the maximum 0.9900"
    assert gate({**metrics, "detection_auc_gbt": 0.9}, None, "quality_score", False, mins, maxs)[0]
    ok, reason = gate({**metrics, "detection_auc_gbt": 0.9, "tstr_auc_gbt": 0.52}, None, "quality_score", False,
                      mins, maxs)
    assert not ok and reason.startswith("tstr_auc_gbt=0.5200 is below the minimum 0.56")

"""The promotion gate, one for every data kind.

A candidate is promoted to ``@champion`` only when it meets every bound and beats the champion
(re-evaluated on the same rows and seed) on the primary metric by more than
``evaluate.min_improvement``. Bounds come from the config (``evaluate.min_*``/``max_*``) and,
where the config sets none for a metric, from the kind's trivial baseline measured in the same
evaluation (``DataKind.baseline_bounds``): a model no better than noise is never published.
"""

from __future__ import annotations

import math

Bounds = dict[str, float]


def configured_bounds(ev) -> tuple[Bounds, Bounds]:
    """The bounds an ``EvaluateConfig`` sets: (minimums, maximums) by metric name."""
    minimums = {k: v for k, v in {"quality_score": ev.min_quality_score, "tstr_f1_mean": ev.min_tstr_f1,
                                   "quality_score_all_pairs": ev.min_quality_score_all_pairs,
                                   "tstr_auc_gbt": ev.min_tstr_auc_gbt,
                                   "conditional_accuracy": ev.min_conditional_accuracy}.items() if v is not None}
    maximums = {k: v for k, v in {"detection_auc": ev.max_detection_auc, "exact_copy_share": ev.max_exact_copy_share,
                                   "detection_auc_gbt": ev.max_detection_auc_gbt,
                                   "fid": ev.max_fid}.items() if v is not None}
    return minimums, maximums


def bounds(ev, baseline: tuple[Bounds, Bounds]) -> tuple[Bounds, Bounds]:
    """Configured bounds, and the baseline's for every metric the config leaves unbounded."""
    minimums, maximums = configured_bounds(ev)
    return {**baseline[0], **minimums}, {**baseline[1], **maximums}


def gate(candidate: dict[str, float], champion: dict[str, float] | None, primary: str, lower_is_better: bool,
         minimums: Bounds | None = None, maximums: Bounds | None = None,
         min_improvement: float = 0.0) -> tuple[bool, str]:
    """Promote only when the candidate meets every bound and beats the champion on ``primary``
    by more than ``min_improvement`` (in the metric's units): a difference inside the
    evaluation's noise is not an improvement.

    A bounded metric the candidate lacks (e.g. TSTR on a table without a label) refuses it: a
    configured check that cannot run is not passed. Returns (promote, reason).
    """
    checks = [(k, v, ">=") for k, v in (minimums or {}).items()] + [(k, v, "<=") for k, v in (maximums or {}).items()]
    for metric, bound, op in checks:
        value = candidate.get(metric)
        if value is None or math.isnan(value):
            return False, f"{metric} was not measured but a bound {op} {bound:.4f} is configured"
        if (value < bound) if op == ">=" else (value > bound):
            side = "below the minimum" if op == ">=" else "above the maximum"
            return False, f"{metric}={value:.4f} is {side} {bound:.4f}"
    if primary not in candidate:
        return False, f"the primary metric {primary} was not measured for this model"
    value = candidate[primary]
    passed = "passes the bounds" if checks else "has no bounds"
    if champion is None:
        return True, f"{primary}={value:.4f} {passed} and there is no champion yet"
    gain = champion[primary] - value if lower_is_better else value - champion[primary]
    margin = f" by more than {min_improvement:.4f}" if min_improvement else ""
    if gain > min_improvement:
        return True, f"{primary}={value:.4f} beats the champion's {champion[primary]:.4f}{margin} and {passed}"
    return False, f"{primary}={value:.4f} does not beat the champion's {champion[primary]:.4f}{margin}"

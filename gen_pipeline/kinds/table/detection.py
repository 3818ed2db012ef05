"""The gradient-boosted-trees protocol the tabular papers use, and the two reference rows.

Current tabular generators (TabSyn, TabDiff, TabPC) are compared on three figures: SDMetrics'
quality over all column pairs, the ROC-AUC of a gradient-boosted detector telling real training
rows from synthetic ones (a classifier two-sample test: 0.5 is indistinguishable), and the
ROC-AUC on the real test split of the same kind of model trained on synthetic rows. A logistic
detector only sees each column on its own scale: rows whose every column keeps its marginal but
no relation to the others pass it at 0.5, while trees of depth 6 see the broken interactions.

The protocol is pinned so that a weak detector cannot pass:

- model: scikit-learn's ``HistGradientBoostingClassifier`` with ``GBT_PARAMS`` (200 trees of
  depth 6 at learning rate 0.1; 64 leaves so depth is the bound; no early stopping, so always
  200 trees), the capacity of XGBoost's defaults at depth 6.
- features: continuous columns as numbers (a missing value is the trees' missing branch),
  categorical columns as ordinal codes over the sorted union of every frame's values, a missing
  value a category of its own.
- detection: as many synthetic rows as real training rows (both subsampled to the smaller, then
  to ``max_rows``), 5-fold stratified cross-validation, the mean of the folds' ROC-AUC (not
  folded at 0.5: an AUC below 0.5 is noise around 0.5).
- train-on-synthetic (TSTR) / train-on-real (TRTR): fit on as many synthetic (real training)
  rows as real training rows, ROC-AUC on the real test split; a multi-class label is one-vs-rest
  macro AUC over the test split's classes (a class the training rows lack scores 0.5).

The reference rows need no model and give every figure its floor and ceiling:

- real held-out rows: real rows the model never saw (the pipeline passes its validation split)
  stand in for the synthetic rows: what a perfect generator scores.
- independent marginals: each column drawn with replacement from the real training rows,
  independently of the other columns: every column's shape perfect, every relation gone.

Everything is seeded; the same frames and seed give the same figures.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gen_pipeline.kinds.table.schema import TableSchema

MISSING = "<missing>"
GBT_PARAMS = {"max_iter": 200, "max_depth": 6, "learning_rate": 0.1, "max_leaf_nodes": 64, "early_stopping": False}
DETECTION_FOLDS = 5
# OpenMP threads per fit. Each tree level is a parallel region with a barrier: on cores shared
# with other jobs a descheduled thread stalls every barrier, and a fit can take thirty times as
# long with two threads as with one (benchmarks/RESULTS.md). One thread is predictable.
GBT_THREADS = 1


def gbt_classifier(seed: int = 0):
    """A HistGradientBoostingClassifier with the pinned capacity (module docstring); fit it
    inside ``_threads()``."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(**GBT_PARAMS, random_state=seed)


def _threads():
    import sklearn.ensemble  # noqa: F401  (loads the OpenMP runtime the limit applies to)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=GBT_THREADS, user_api="openmp")


def _strings(s: pd.Series) -> np.ndarray:
    return s.astype(object).where(s.notna(), MISSING).astype(str).to_numpy()


def ordinal_features(frames: list[pd.DataFrame], schema: TableSchema,
                     exclude: tuple[str, ...] = ()) -> list[np.ndarray]:
    """Each frame as a float matrix over the schema's model columns (less ``exclude``):
    continuous columns as numbers (missing -> NaN), categorical ones as codes over the sorted
    union of their values in ALL ``frames`` (missing is a value of its own)."""
    cols = [c for c in schema.model_columns if c.name not in exclude]
    out = [np.empty((len(f), len(cols))) for f in frames]
    for j, c in enumerate(cols):
        if c.kind == "continuous":
            for x, f in zip(out, frames):
                x[:, j] = pd.to_numeric(f[c.name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            values = [_strings(f[c.name]) for f in frames]
            vocab = np.unique(np.concatenate(values))
            for x, v in zip(out, values):
                x[:, j] = np.searchsorted(vocab, v)
    return out


def balanced(real: pd.DataFrame, other: pd.DataFrame, max_rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both frames subsampled (seeded, without replacement) to the same row count:
    min(len(real), len(other), max_rows)."""
    n = min(len(real), len(other), max_rows)
    pick = lambda df, s: df if len(df) == n else df.sample(n=n, random_state=s)  # noqa: E731
    return pick(real, seed), pick(other, seed + 1)


def gbt_detection_auc(real: pd.DataFrame, synth: pd.DataFrame, schema: TableSchema, seed: int = 0,
                      folds: int = DETECTION_FOLDS) -> float:
    """Mean ROC-AUC over ``folds`` stratified folds of the pinned detector telling ``real``
    (label 1) from ``synth`` (label 0). The caller balances the frames (``balanced``)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    xr, xs = ordinal_features([real, synth], schema)
    x = np.concatenate([xr, xs])
    y = np.concatenate([np.ones(len(xr)), np.zeros(len(xs))])
    aucs = []
    for k, (tr, te) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y)):
        with _threads():
            clf = gbt_classifier(seed + k).fit(x[tr], y[tr])
            proba = clf.predict_proba(x[te])[:, 1]
        aucs.append(roc_auc_score(y[te], proba))
    return float(np.mean(aucs))


def gbt_utility_auc(train: pd.DataFrame, test: pd.DataFrame, schema: TableSchema, label: str, seed: int = 0) -> float:
    """ROC-AUC on ``test`` of the pinned model fitted on ``train`` to predict ``label`` from the
    other model columns; one-vs-rest macro AUC over ``test``'s classes when there are more than
    two. Rows with a missing label are left out."""
    from sklearn.metrics import roc_auc_score

    train, test = train[train[label].notna()], test[test[label].notna()]
    y_train, y_test = _strings(train[label]), _strings(test[label])
    classes = np.unique(y_test)
    if len(classes) < 2:
        raise ValueError(f"column {label!r}: the test rows hold {len(classes)} class(es); an AUC needs two")
    x_train, x_test = ordinal_features([train, test], schema, exclude=(label,))
    fitted = np.unique(y_train)
    if len(fitted) < 2:  # one class learned: a constant score, AUC 0.5
        proba = np.zeros((len(x_test), len(fitted)))
    else:
        with _threads():
            clf = gbt_classifier(seed).fit(x_train, y_train)
            proba = clf.predict_proba(x_test)
        fitted = clf.classes_
    aucs = []
    for c in classes if len(classes) > 2 else classes[-1:]:  # binary: one AUC (the other is the same)
        score = proba[:, np.searchsorted(fitted, c)] if c in fitted else np.zeros(len(x_test))
        aucs.append(roc_auc_score(y_test == c, score))
    return float(np.mean(aucs))


def independent_marginals(real: pd.DataFrame, columns: list[str], n: int, seed: int) -> pd.DataFrame:
    """``n`` rows whose every column is drawn with replacement from ``real``'s, independently of
    the other columns (each column's own seeded draw): the marginals kept, every relation gone."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: real[c].iloc[rng.integers(0, len(real), n)].to_numpy() for c in columns})


def gbt_metrics(real_train: pd.DataFrame, real_test: pd.DataFrame, synth: pd.DataFrame, schema: TableSchema,
                label: str | None, max_rows: int, seed: int = 0) -> dict[str, float]:
    """``detection_auc_gbt`` and, with a ``label`` present in ``synth``, ``tstr_auc_gbt`` for
    ``synth``: as many synthetic rows as real training rows (at most ``max_rows``)."""
    real, fake = balanced(real_train, synth, max_rows, seed)
    out = {"detection_auc_gbt": gbt_detection_auc(real, fake, schema, seed)}
    if label is not None and label in synth.columns:
        out["tstr_auc_gbt"] = gbt_utility_auc(fake, real_test, schema, label, seed)
    return out

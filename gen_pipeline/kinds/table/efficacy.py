"""Machine-learning efficacy as SDGym 0.2 measures it: four binary classifiers trained on one set
of rows (synthetic, or real for the ceiling) and tested on the real held-out rows; F1 of the
positive class and accuracy, on SDGym's feature maker."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from gen_pipeline.kinds.table.schema import TableSchema


def _numeric(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _strings(s: pd.Series) -> np.ndarray:
    return s.astype(object).where(s.notna(), "<missing>").astype(str).to_numpy()


def _classifiers(seed: int) -> dict:
    """SDGym 0.2's four binary classifiers, with their exact settings."""
    from sklearn.ensemble import AdaBoostClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.tree import DecisionTreeClassifier

    return {
        "decision_tree": DecisionTreeClassifier(max_depth=15, class_weight="balanced", random_state=seed),
        "adaboost": AdaBoostClassifier(random_state=seed),
        "logistic_regression": LogisticRegression(solver="lbfgs", class_weight="balanced", max_iter=50),
        "mlp": MLPClassifier(hidden_layer_sizes=(50,), max_iter=50, random_state=seed),
    }


class FeatureMaker:
    """SDGym 0.2's features, fitted on real training rows.

    Continuous: log for non-negative columns reaching 1e3 (Adult's fnlwgt and capital columns),
    otherwise min-max scaled to [0, 5]; missing -> the training median. Categorical: one-hot
    (unseen values all zero), a two-valued column one 0/1 feature.
    """

    def __init__(self, real_train: pd.DataFrame, schema: TableSchema, label: str):
        self.columns = [c for c in schema.model_columns if c.name != label]
        self.stats: dict[str, tuple[float, float, float]] = {}
        self.vocab: dict[str, list[str]] = {}
        for c in self.columns:
            if c.kind == "continuous":
                v = _numeric(real_train[c.name])
                v = v[~np.isnan(v)]
                self.stats[c.name] = (float(v.min()), float(v.max()), float(np.median(v))) if len(v) else (0., 1., 0.)
            else:
                self.vocab[c.name] = sorted(pd.unique(_strings(real_train[c.name])))

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        parts = []
        for c in self.columns:
            if c.kind == "continuous":
                lo, hi, med = self.stats[c.name]
                v = _numeric(df[c.name])
                v = np.where(np.isnan(v), med, v)
                if lo >= 0 and hi >= 1e3:
                    parts.append(np.log(np.maximum(v, 1e-2))[:, None])
                else:
                    parts.append(((v - lo) / (hi - lo if hi > lo else 1.0) * 5)[:, None])
            else:
                vocab = self.vocab[c.name]
                s = _strings(df[c.name])
                if len(vocab) <= 2:
                    parts.append((s == vocab[-1]).astype(np.float64)[:, None])
                else:
                    parts.append((s[:, None] == np.asarray(vocab)[None, :]).astype(np.float64))
        return np.concatenate(parts, axis=1)


def _binary_target(df: pd.DataFrame, label: str, positive: str) -> tuple[pd.DataFrame, np.ndarray]:
    known = df[df[label].notna()]
    return known, (known[label].astype(str).to_numpy() == str(positive)).astype(int)


def efficacy(train: pd.DataFrame, test: pd.DataFrame, features: FeatureMaker, label: str, positive: str,
             seed: int = 0) -> dict[str, tuple[float, float]]:
    """Fit each classifier on ``train``, predict ``test``: {classifier: (F1 of ``positive``, accuracy)}."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, f1_score

    train, y_train = _binary_target(train, label, positive)
    test, y_test = _binary_target(test, label, positive)
    x_train, x_test = features.transform(train), features.transform(test)
    out = {}
    for name, clf in _classifiers(seed).items():
        if len(np.unique(y_train)) < 2:  # a synthetic set with one class: predict it (as SDGym does)
            pred = np.full(len(y_test), y_train[0] if len(y_train) else 0)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=50 is SDGym's setting
                pred = clf.fit(x_train, y_train).predict(x_test)
        out[name] = (float(f1_score(y_test, pred, zero_division=0.0)), float(accuracy_score(y_test, pred)))
    return out

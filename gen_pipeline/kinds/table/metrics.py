"""Quality of synthetic rows against real rows, the report that shows it, and the promotion gate.

Everything here is pure pandas/numpy/scikit-learn on frames in the ORIGINAL schema (what
``ModelBundle.sample`` and SDV's ``sample`` return), so a benchmark calls it without MLflow or
Spark; ``pipeline.stage_evaluate`` calls it and logs the result.

- Quality Score, Column Shapes, Column Pair Trends: SDMetrics' QualityReport (MIT), the
  measure SDGym publishes. Synthetic vs the real held-out split; higher is better. SDMetrics
  0.32's report averages only the pairs whose real association is strong (|correlation| > 0.5,
  contingency association > 0.3); ``*_all_pairs`` average every pair, as the papers report it.
- The gradient-boosted protocol of the tabular papers (``gen_pipeline.detection``): detection
  AUC and train-on-synthetic / train-on-real AUC of 200 trees of depth 6, with two reference
  rows that need no model (real held-out rows, independent column marginals) as the floor and
  ceiling of every figure (``reference_metrics``).
- Detection AUC: ROC-AUC of a logistic regression telling the real held-out rows from synthetic
  ones (0.5 is best), on the normalised encoding below.
- Efficacy, train-synthetic-test-real (TSTR): SDGym 0.2's four binary classifiers and feature
  maker, trained on synthetic rows and tested on the real held-out split; F1 of the positive
  class and accuracy, with the train-real-test-real row (TRTR) beside it as the ceiling.
  SDGym 0.2.2 on Adult, mean F1 of the four: real 0.663, TVAE 0.619, CTGAN 0.602.
- Privacy: distance to closest record (DCR) from synthetic rows to the real training rows on
  the normalised encoding, beside the real held-out rows' own DCR to the training rows (what
  "new rows from the same distribution" look like); and the share of synthetic rows that are
  exact copies of a training row (the held-out split's share beside it).
- For a VAE (``evaluate_bundle``), the held-out negative ELBO and ROC-AUC against label columns.

Sizes: every comparison subsamples to ``max_rows`` rows per frame (default 10,000; SDGym used
50,000), DCR queries to ``dcr_rows`` (default 2,000) against at most ``max_dcr_reference``
training rows (default 20,000); exact copies use every row; the gradient-boosted protocol takes
as many synthetic rows as real training rows, at most ``gbt_max_rows`` (default 50,000, all of
Adult's), and costs most of the report's time (benchmarks/RESULTS.md); each reference row costs
about as much again.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd

from gen_pipeline.kinds.table.detection import gbt_metrics, gbt_utility_auc, independent_marginals
from gen_pipeline.kinds.table.efficacy import FeatureMaker, efficacy
from gen_pipeline.kinds.table.schema import TableSchema

MISSING = "<missing>"
CLASSIFIERS = ("decision_tree", "adaboost", "logistic_regression", "mlp")  # SDGym 0.2's four


def _numeric(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _strings(s: pd.Series) -> np.ndarray:
    return s.astype(object).where(s.notna(), MISSING).astype(str).to_numpy()


def _subsample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return df if len(df) <= n else df.sample(n=n, random_state=seed)


# ---- SDMetrics quality and detection ------------------------------------------------------------
def sdmetrics_quality(real: pd.DataFrame, synth: pd.DataFrame, schema: TableSchema) -> dict[str, float]:
    """SDMetrics' Quality Score with its two properties and the per-column shape scores."""
    with warnings.catch_warnings():  # 0.32 flags the single-table report deprecated; it is the stable API
        warnings.simplefilter("ignore", FutureWarning)
        from sdmetrics.reports.single_table import QualityReport
        from sdmetrics.reports.single_table._properties import ColumnPairTrends

    cols = [c.name for c in schema.model_columns]
    metadata = {"columns": {c.name: {"sdtype": "numerical" if c.kind == "continuous" else "categorical"}
                            for c in schema.model_columns}}

    def plain(df: pd.DataFrame) -> pd.DataFrame:  # nullable Int64 -> float, so NaN is a value
        return df[cols].astype({c.name: "float64" for c in schema.model_columns if c.kind == "continuous"})

    report = QualityReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report.generate(plain(real), plain(synth), metadata, verbose=False)
        all_pairs = ColumnPairTrends()  # every pair: the report sets the thresholds to 0.5 / 0.3
        all_pairs.real_correlation_threshold = all_pairs.real_association_threshold = 0
        all_pairs.num_rows_subsample = report.num_rows_subsample
        trends_all = float(all_pairs.get_score(plain(real), plain(synth), metadata))
    props = report.get_properties().set_index("Property")["Score"]
    shapes = report.get_details("Column Shapes").set_index("Column")["Score"]
    out = {"quality_score": float(report.get_score()), "column_shapes": float(props["Column Shapes"]),
           "column_pair_trends": float(props["Column Pair Trends"]),
           "quality_score_all_pairs": float(np.nanmean([props["Column Shapes"], trends_all])),
           "column_pair_trends_all_pairs": trends_all}
    out.update({f"shape_{k}": float(v) for k, v in shapes.items()})
    return out


def detection_auc(real_x: np.ndarray, synth_x: np.ndarray, seed: int = 0) -> float:
    """Cross-validated ROC-AUC of a classifier telling real from synthetic encoded rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    x = np.concatenate([real_x, synth_x])
    y = np.concatenate([np.ones(len(real_x)), np.zeros(len(synth_x))])
    clf = LogisticRegression(max_iter=500)
    cv = StratifiedKFold(3, shuffle=True, random_state=seed)
    auc = cross_val_score(clf, x, y, cv=cv, scoring="roc_auc").mean()
    return float(max(auc, 1.0 - auc))


# ---- the normalised encoding for distances and detection -----------------------------------------
class RowEncoder:
    """Fitted on real training rows: each column becomes a point in a unit-scaled space.

    Continuous: the real training empirical CDF (rank in [0, 1]; robust to heavy tails such as
    Adult's capital gain), a missing value at 0 plus a missing indicator. Categorical: one-hot over
    the training vocabulary (missing is a category, unseen values share one slot), scaled by
    1/sqrt(2) so a mismatch adds exactly 1 to the squared distance. The Euclidean distance divided
    by sqrt(number of columns) is therefore in [0, 1]: 0 for identical rows, 1 when every
    categorical differs and every continuous sits at opposite ends.
    """

    def __init__(self, real_train: pd.DataFrame, schema: TableSchema, columns: list[str] | None = None):
        self.columns = [c for c in schema.model_columns if columns is None or c.name in columns]
        self.grid: dict[str, np.ndarray] = {}
        self.vocab: dict[str, dict[str, int]] = {}
        for c in self.columns:
            if c.kind == "continuous":
                v = _numeric(real_train[c.name])
                v = np.sort(v[~np.isnan(v)])
                self.grid[c.name] = v if len(v) else np.zeros(1)
            else:
                cats = pd.unique(_strings(real_train[c.name]))
                self.vocab[c.name] = {str(k): i for i, k in enumerate(cats)}

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        parts = []
        for c in self.columns:
            if c.kind == "continuous":
                v, grid = _numeric(df[c.name]), self.grid[c.name]
                nan = np.isnan(v)
                # mid-rank CDF: ties (e.g. the zero spike of capital_gain) sit in the middle of their mass
                lo = np.searchsorted(grid, v, side="left")
                hi = np.searchsorted(grid, v, side="right")
                cdf = np.where(nan, 0.0, (lo + hi) / (2.0 * len(grid)))
                parts += [cdf[:, None], nan[:, None].astype(np.float64)]
            else:
                vocab = self.vocab[c.name]
                codes = np.array([vocab.get(s, len(vocab)) for s in _strings(df[c.name])], dtype=np.int64)
                onehot = np.zeros((len(df), len(vocab) + 1))
                onehot[np.arange(len(df)), codes] = 1.0 / np.sqrt(2.0)
                parts.append(onehot)
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(df), 0))


def closest_distances(query: np.ndarray, reference: np.ndarray, n_columns: int, chunk: int = 1024) -> np.ndarray:
    """Euclidean distance from each query row to its nearest reference row, / sqrt(n_columns)."""
    ref_sq = (reference ** 2).sum(1)
    out = np.empty(len(query))
    for i in range(0, len(query), chunk):  # (chunk, R) distance block via one matrix product
        q = query[i:i + chunk]
        d2 = (q ** 2).sum(1)[:, None] + ref_sq[None, :] - 2.0 * q @ reference.T
        out[i:i + chunk] = np.sqrt(np.maximum(d2.min(1), 0.0))
    out[out < 1e-9] = 0.0  # rounding of the expansion; an identical row is exactly 0
    return out / np.sqrt(max(1, n_columns))


def exact_copy_share(rows: pd.DataFrame, real_train: pd.DataFrame, columns: list[str]) -> float:
    """Share of ``rows`` identical (every column, missing == missing) to some real training row."""
    if not len(rows):
        return float("nan")

    def keys(df: pd.DataFrame) -> pd.Series:
        norm = pd.DataFrame({c: _strings(df[c].astype("float64") if pd.api.types.is_numeric_dtype(df[c])
                                         else df[c]) for c in columns})
        return pd.util.hash_pandas_object(norm, index=False)

    return float(keys(rows).isin(set(keys(real_train).to_numpy())).mean())


# ---- the report ----------------------------------------------------------------------------------
def tabular_report(real_train: pd.DataFrame, real_test: pd.DataFrame, synth: pd.DataFrame, schema: TableSchema,
                   label: str | None = None, positive: str | None = None, *, max_rows: int = 10_000,
                   dcr_rows: int = 2_000, max_dcr_reference: int = 20_000, seed: int = 0,
                   gbt_max_rows: int = 50_000, real_holdout: pd.DataFrame | None = None,
                   reference_rows: bool = False) -> dict[str, float]:
    """Every table quality figure for ``synth`` against real rows; all frames in the original schema.

    Args:
        real_train: the real rows the model was trained on (TRTR training set, DCR/copy reference).
        real_test: real rows the model never saw (quality, detection, the classifiers' test set).
        synth: synthetic rows, at least the schema's model columns.
        schema: the table schema (which columns are continuous / categorical).
        label: a categorical model column to predict for TSTR; None, or a column missing from
            ``synth`` (e.g. Shuttle's ``anomaly`` label, never generated), skips TSTR.
        positive: the positive class of ``label`` (Adult: ``">50K"``); None = its rarer class in
            ``real_train``.
        max_rows, dcr_rows, max_dcr_reference, seed: subsample sizes (module docstring) and seed.
        gbt_max_rows: the gradient-boosted protocol's row cap (``gen_pipeline.detection``).
        real_holdout, reference_rows: with ``reference_rows``, add ``reference_metrics`` (real
            held-out rows from ``real_holdout``, which the model never saw; independent marginals).

    Returns:
        ``quality_score``, ``column_shapes``, ``column_pair_trends``, ``quality_score_all_pairs``,
        ``column_pair_trends_all_pairs``, ``shape_<column>``, ``detection_auc``,
        ``detection_auc_gbt``, ``association_diff_mean``; ``dcr_median``, ``dcr_p05``,
        ``dcr_holdout_median``, ``dcr_holdout_p05``, ``dcr_ratio`` (synthetic over holdout median;
        well below 1 means the rows sit closer to the training rows than new real rows do),
        ``exact_copy_share``, ``holdout_exact_copy_share``; with a label,
        ``tstr_f1_<clf>``, ``tstr_accuracy_<clf>``, ``trtr_f1_<clf>``, ``trtr_accuracy_<clf>``
        for clf in decision_tree, adaboost, logistic_regression, mlp, their ``*_mean``, and
        ``tstr_f1_ratio`` (TSTR mean F1 over TRTR mean F1), ``tstr_auc_gbt``, ``trtr_auc_gbt``;
        ``gbt_seconds``, ``report_seconds``; with ``reference_rows``, ``reference_metrics``' figures.
    """
    t0 = time.perf_counter()
    cols = [c.name for c in schema.model_columns]
    missing = [c for c in cols if c not in synth.columns]
    if missing:
        raise ValueError(f"synthetic rows lack the model columns {missing}")
    test = _subsample(real_test, max_rows, seed)
    sample = _subsample(synth, max_rows, seed + 1)
    metrics = sdmetrics_quality(test, sample, schema)

    enc = RowEncoder(real_train, schema)
    metrics["detection_auc"] = detection_auc(enc.transform(test), enc.transform(sample), seed)
    metrics["association_diff_mean"] = float(np.nanmean(np.abs(
        association_matrix(sample, schema, test) - association_matrix(test, schema, test)).to_numpy()))

    ref = enc.transform(_subsample(real_train, max_dcr_reference, seed + 2))
    n_cols = len(enc.columns)
    d_syn = closest_distances(enc.transform(_subsample(synth, dcr_rows, seed + 3)), ref, n_cols)
    d_hold = closest_distances(enc.transform(_subsample(real_test, dcr_rows, seed + 4)), ref, n_cols)
    metrics.update({"dcr_median": float(np.median(d_syn)), "dcr_p05": float(np.quantile(d_syn, 0.05)),
                    "dcr_holdout_median": float(np.median(d_hold)), "dcr_holdout_p05": float(np.quantile(d_hold, 0.05))})
    metrics["dcr_ratio"] = metrics["dcr_median"] / metrics["dcr_holdout_median"] if metrics["dcr_holdout_median"] else float("nan")
    metrics["exact_copy_share"] = exact_copy_share(synth, real_train, cols)
    metrics["holdout_exact_copy_share"] = exact_copy_share(real_test, real_train, cols)

    t_gbt = time.perf_counter()
    has_label = label is not None and label in synth.columns and label in real_train.columns
    metrics.update(gbt_metrics(real_train, real_test, synth, schema, label if has_label else None, gbt_max_rows, seed))
    if has_label:
        metrics["trtr_auc_gbt"] = gbt_utility_auc(_subsample(real_train, gbt_max_rows, seed), real_test, schema,
                                                  label, seed)
    metrics["gbt_seconds"] = time.perf_counter() - t_gbt
    if reference_rows:
        metrics.update(reference_metrics(real_train, real_test, real_holdout, schema, label if has_label else None,
                                         max_rows=max_rows, gbt_max_rows=gbt_max_rows, seed=seed))

    if label is not None and label in synth.columns and label in real_train.columns:
        if positive is None:
            positive = real_train[label].dropna().astype(str).value_counts().index[-1]
        features = FeatureMaker(real_train, schema, label)
        sides = {"tstr": _subsample(synth, max_rows, seed + 5), "trtr": _subsample(real_train, max_rows, seed + 6)}
        for side, train in sides.items():
            scores = efficacy(train, test, features, label, positive, seed)
            for clf, (f1, acc) in scores.items():
                metrics[f"{side}_f1_{clf}"], metrics[f"{side}_accuracy_{clf}"] = f1, acc
            metrics[f"{side}_f1_mean"] = float(np.mean([f for f, _ in scores.values()]))
            metrics[f"{side}_accuracy_mean"] = float(np.mean([a for _, a in scores.values()]))
        metrics["tstr_f1_ratio"] = metrics["tstr_f1_mean"] / metrics["trtr_f1_mean"] if metrics["trtr_f1_mean"] else float("nan")
    metrics["report_seconds"] = time.perf_counter() - t0
    return metrics


REFERENCE_ROWS = {"holdout": "real held-out rows", "marginals": "independent marginals"}
REFERENCE_METRICS = ("quality_score", "quality_score_all_pairs", "column_pair_trends_all_pairs",
                     "detection_auc_gbt", "tstr_auc_gbt")


def reference_metrics(real_train: pd.DataFrame, real_test: pd.DataFrame, real_holdout: pd.DataFrame | None,
                      schema: TableSchema, label: str | None = None, *, max_rows: int = 10_000,
                      gbt_max_rows: int = 50_000, seed: int = 0) -> dict[str, float]:
    """The two rows that need no model, scored exactly as ``tabular_report`` scores a model:
    ``ref_holdout_<m>`` with ``real_holdout`` (real rows no model saw; the pipeline passes its
    validation split; None or empty leaves the row out) as the synthetic rows, and
    ``ref_marginals_<m>`` with as many rows as the real training rows (at most ``gbt_max_rows``),
    each column drawn independently from ``real_train`` (seeded); <m> in ``REFERENCE_METRICS``
    (``tstr_auc_gbt`` with a ``label`` only), and ``reference_seconds``."""
    t0 = time.perf_counter()
    cols = [c.name for c in schema.model_columns]
    rows = {"marginals": independent_marginals(real_train, cols, min(len(real_train), gbt_max_rows), seed + 7)}
    if real_holdout is not None and len(real_holdout):
        rows["holdout"] = real_holdout
    test = _subsample(real_test, max_rows, seed)
    out = {}
    for name, fake in rows.items():
        m = {**sdmetrics_quality(test, _subsample(fake, max_rows, seed + 1), schema),
             **gbt_metrics(real_train, real_test, fake, schema, label, gbt_max_rows, seed)}
        out.update({f"ref_{name}_{k}": m[k] for k in REFERENCE_METRICS if k in m})
    out["reference_seconds"] = time.perf_counter() - t0
    return out


def association_matrix(df: pd.DataFrame, schema: TableSchema, reference: pd.DataFrame | None = None,
                       bins: int = 10) -> pd.DataFrame:
    """Cramér's V between every pair of model columns (continuous ones cut into ``bins`` quantile
    bins of ``reference``, by default ``df`` itself), one measure in [0, 1] for every kind of pair."""
    reference = df if reference is None else reference
    codes = {}
    for c in schema.model_columns:
        if c.kind == "continuous":
            r = _numeric(reference[c.name])
            edges = np.unique(np.nanquantile(r, np.linspace(0, 1, bins + 1)[1:-1])) if (~np.isnan(r)).any() else []
            v = _numeric(df[c.name])
            # side="left": a spike (capital_gain's zeros) is its own bin below the values above it
            codes[c.name] = np.where(np.isnan(v), len(edges) + 1, np.searchsorted(edges, v, side="left"))
        else:
            codes[c.name] = pd.factorize(_strings(df[c.name]))[0]
    names = list(codes)
    out = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            out.loc[a, b] = out.loc[b, a] = _cramers_v(codes[a], codes[b])
    return out


def _cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    ka, kb = a.max(initial=-1) + 1, b.max(initial=-1) + 1
    if min(ka, kb) < 2:
        return 0.0
    table = np.bincount(a * kb + b, minlength=ka * kb).reshape(ka, kb).astype(np.float64)
    n = table.sum()
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / n
    chi2 = ((table - expected) ** 2 / np.where(expected > 0, expected, 1.0)).sum()
    return float(np.sqrt(chi2 / n / (min(ka, kb) - 1)))


# ---- what the metrics see of a table with every column kind --------------------------------------
def evaluation_view(schema: TableSchema, *frames: pd.DataFrame) -> tuple[TableSchema, list[pd.DataFrame]]:
    """The schema and frames the metrics judge: identifiers and constants left out (regenerated,
    not learned: nothing to compare), datetimes and dates as numbers (seconds since 1970) judged
    as continuous columns, booleans as categories; continuous and categorical columns as they are."""
    import dataclasses

    keep, cols = [], []
    for c in schema.columns:
        if c.kind in ("identifier", "constant", "text"):
            continue
        if c.kind in ("datetime", "date"):
            cols.append(dataclasses.replace(c, kind="continuous", dtype="float", format=None))
        elif c.kind == "boolean":
            cols.append(dataclasses.replace(c, kind="categorical", dtype="string"))
        elif c.dtype.startswith("decimal"):  # fixed-point numbers judged as floats
            cols.append(dataclasses.replace(c, dtype="float"))
        else:
            cols.append(c)
        keep.append(c)
    view = dataclasses.replace(schema, columns=tuple(cols))
    out = []
    for df in frames:
        df = df[[c.name for c in keep if c.name in df.columns]].copy()
        for c in keep:
            if c.name not in df.columns:
                continue
            if c.kind in ("datetime", "date"):
                t = pd.to_datetime(df[c.name], errors="coerce")
                if isinstance(t.dtype, pd.DatetimeTZDtype):  # an instant: its UTC wall clock
                    t = t.dt.tz_convert("UTC").dt.tz_localize(None)
                df[c.name] = (t - pd.Timestamp("1970-01-01")).dt.total_seconds()
            elif c.dtype.startswith("decimal"):
                df[c.name] = pd.to_numeric(df[c.name], errors="coerce").astype("float64")
            elif c.kind == "boolean":
                df[c.name] = df[c.name].map(lambda v: None if v is None or v != v else str(bool(v)))
        out.append(df)
    return view, out


# ---- a registered model: sample it, report, add what only the model can tell ---------------------
def evaluate_bundle(bundle, real_train: pd.DataFrame, real_test: pd.DataFrame, n: int, seed: int,
                    label: str | None = None, positive: str | None = None,
                    max_rows: int = 10_000, gbt_max_rows: int = 50_000):
    """Sample ``n`` rows with ``seed``, ``tabular_report`` them (through ``evaluation_view``); for
    a model that scores add the held-out negative ELBO (nats per row) and its ROC-AUC against
    binary label columns. Returns (metrics, the synthetic rows as judged, the schema judged)."""
    synth = bundle.sample(n, seed)
    schema, (train_v, test_v, synth_v) = evaluation_view(bundle.schema, real_train, real_test, synth)
    metrics = tabular_report(train_v, test_v, synth_v, schema, label, positive,
                             max_rows=max_rows, seed=seed, gbt_max_rows=gbt_max_rows)
    if bundle.family.can_score:
        import pyarrow as pa

        from gen_pipeline.scores import ScoreSummary

        scores, reasons = bundle.score(real_test)
        ok = np.array([r is None for r in reasons], dtype=bool)
        metrics["test_neg_elbo_nats"] = float(scores[ok].mean())
        labels = bundle.schema.label_columns  # e.g. Shuttle's anomaly flag: does the score rank it?
        summary = ScoreSummary(labels)
        summary.add(pa.table({"score": scores, **{c: pd.to_numeric(real_test[c], errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan) for c in labels}}))
        metrics.update(summary.roc_aucs())
    return metrics, synth_v, schema

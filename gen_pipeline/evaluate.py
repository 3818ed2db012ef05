"""Quality of synthetic rows against held-out real rows, and the promotion gate.

- Quality Score, Column Shapes, Column Pair Trends: SDMetrics' QualityReport (MIT), the
  measure SDGym publishes, so our figures compare with theirs. Higher is better; the Quality
  Score is the gate's primary metric.
- Detection AUC: ROC-AUC of a logistic regression telling real from synthetic (0.5 is best).
- For a VAE, the held-out negative ELBO in nats per row, and ROC-AUC against any label column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gen_pipeline.schema import TableSchema


def _numeric(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def sdmetrics_quality(real: pd.DataFrame, synth: pd.DataFrame, schema: TableSchema) -> dict[str, float]:
    """SDMetrics' Quality Score with its two properties and the per-column shape scores."""
    import warnings

    with warnings.catch_warnings():  # 0.32 flags the single-table report deprecated; it is the stable API
        warnings.simplefilter("ignore", FutureWarning)
        from sdmetrics.reports.single_table import QualityReport

    cols = [c.name for c in schema.model_columns]
    metadata = {"columns": {c.name: {"sdtype": "numerical" if c.kind == "continuous" else "categorical"}
                            for c in schema.model_columns}}

    def plain(df: pd.DataFrame) -> pd.DataFrame:  # nullable Int64 -> float, so NaN is a value
        return df[cols].astype({c.name: "float64" for c in schema.model_columns if c.kind == "continuous"})

    report = QualityReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report.generate(plain(real), plain(synth), metadata, verbose=False)
    props = report.get_properties().set_index("Property")["Score"]
    shapes = report.get_details("Column Shapes").set_index("Column")["Score"]
    out = {"quality_score": float(report.get_score()), "column_shapes": float(props["Column Shapes"]),
           "column_pair_trends": float(props["Column Pair Trends"])}
    out.update({f"shape_{k}": float(v) for k, v in shapes.items()})
    return out


def detection_auc(real_x: np.ndarray, synth_x: np.ndarray, seed: int = 0) -> float:
    """Cross-validated ROC-AUC of a classifier telling real from synthetic encoded rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    x = np.concatenate([real_x, synth_x])
    y = np.concatenate([np.ones(len(real_x)), np.zeros(len(synth_x))])
    clf = LogisticRegression(max_iter=500)
    auc = cross_val_score(clf, x, y, cv=3, scoring="roc_auc").mean()
    return float(max(auc, 1.0 - auc))


def quality_report(bundle, real: pd.DataFrame, n: int, seed: int) -> tuple[dict[str, float], pd.DataFrame]:
    """Sample ``n`` rows with ``seed`` and compare with ``real``; returns (metrics, synthetic rows)."""
    schema = bundle.schema
    synth = bundle.sample(n, seed)
    metrics = sdmetrics_quality(real, synth, schema)
    real_x, real_reasons = bundle.transformer.transform(real, strict=False)
    real_x = real_x[[r is None for r in real_reasons]]
    synth_x, _ = bundle.transformer.transform(synth, strict=True)
    metrics["detection_auc"] = detection_auc(real_x, synth_x, seed)
    if bundle.config.model.family == "tvae":
        scores, reasons = bundle.score(real)
        ok = np.array([r is None for r in reasons], dtype=bool)
        metrics["test_neg_elbo_nats"] = float(scores[ok].mean())
        for label in schema.label_columns:  # e.g. Shuttle's anomaly flag: does the score rank it?
            from sklearn.metrics import roc_auc_score

            y = pd.to_numeric(real[label], errors="coerce").to_numpy()[ok]
            if len(np.unique(y[~np.isnan(y)])) == 2:
                metrics[f"roc_auc_{label}"] = float(roc_auc_score(y, scores[ok]))
    return metrics, synth


def marginals_figure(real: pd.DataFrame, synth: pd.DataFrame, schema: TableSchema, path) -> None:
    """Real-vs-synthetic marginals, one panel per column, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = schema.model_columns
    ncols = 4
    nrows = (len(cols) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows))
    for ax, c in zip(axes.flat, cols):
        if c.kind == "continuous":
            a, b = _numeric(real[c.name]), _numeric(synth[c.name])
            a, b = a[~np.isnan(a)], b[~np.isnan(b)]
            lo, hi = np.quantile(a, [0.01, 0.99]) if len(a) else (0.0, 1.0)
            hi = hi if hi > lo else lo + 1.0
            bins = np.linspace(lo, hi, 41)  # the central 98%; the tails pile up in the end bins
            ax.hist(np.clip(a, lo, hi), bins=bins, alpha=0.5, label="real", weights=np.full(len(a), 1 / max(1, len(a))))
            ax.hist(np.clip(b, lo, hi), bins=bins, alpha=0.5, label="synthetic",
                    weights=np.full(len(b), 1 / max(1, len(b))))
        else:
            pr = real[c.name].fillna("<missing>").value_counts(normalize=True)
            ps = synth[c.name].fillna("<missing>").value_counts(normalize=True).reindex(pr.index, fill_value=0)
            top = pr.index[:12]
            x = np.arange(len(top))
            ax.bar(x - 0.2, pr[top].values, 0.4, label="real")
            ax.bar(x + 0.2, ps[top].values, 0.4, label="synthetic")
            ax.set_xticks(x, [str(t)[:10] for t in top], rotation=60, fontsize=6)
        ax.set_title(c.name, fontsize=9)
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def gate(candidate: dict[str, float], champion: dict[str, float] | None, primary: str,
         minimum: float) -> tuple[bool, str]:
    """Promote only when the candidate passes the minimum and beats the champion on ``primary``."""
    value = candidate[primary]
    if value < minimum:
        return False, f"{primary}={value:.4f} is below the configured minimum {minimum:.4f}"
    if champion is None:
        return True, f"{primary}={value:.4f} passes the minimum {minimum:.4f} and there is no champion yet"
    if value > champion[primary]:
        return True, f"{primary}={value:.4f} beats the champion's {champion[primary]:.4f}"
    return False, f"{primary}={value:.4f} does not beat the champion's {champion[primary]:.4f}"

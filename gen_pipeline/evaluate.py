"""Quality of synthetic rows against held-out real rows, and the promotion gate.

Metrics follow SDMetrics' definitions (written here from their documentation):
- Column Shapes: per column 1 - KS statistic (continuous) or 1 - total variation distance
  (categorical), averaged.
- Column Pair Trends: per column pair 1 - |corr_real - corr_synth| / 2 for two continuous
  columns, else 1 - TVD of the joint distribution (continuous columns binned by real deciles).
- Quality Score: the mean of the two. Higher is better; it is the gate's primary metric.
- Detection AUC: ROC-AUC of a logistic regression telling real from synthetic (0.5 is best).
- For a VAE, the held-out negative ELBO in nats per row.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from gen_pipeline.schema import TableSchema


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b))))


def _tvd(a: pd.Series, b: pd.Series) -> float:
    pa_, pb = a.value_counts(normalize=True, dropna=False), b.value_counts(normalize=True, dropna=False)
    return float(0.5 * pa_.subtract(pb, fill_value=0.0).abs().sum())


def _numeric(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def column_shapes(real: pd.DataFrame, synth: pd.DataFrame, schema: TableSchema) -> dict[str, float]:
    out = {}
    for c in schema.model_columns:
        if c.kind == "continuous":
            a, b = _numeric(real[c.name]), _numeric(synth[c.name])
            out[c.name] = 1.0 - _ks(a[~np.isnan(a)], b[~np.isnan(b)])
        else:
            out[c.name] = 1.0 - _tvd(real[c.name].fillna("<missing>"), synth[c.name].fillna("<missing>"))
    return out


def _discretise(real: pd.DataFrame, synth: pd.DataFrame, schema: TableSchema):
    """Continuous columns as real-decile bins (for mixed pairs); categoricals as strings."""
    r, s = pd.DataFrame(index=real.index), pd.DataFrame(index=synth.index)
    for c in schema.model_columns:
        if c.kind == "continuous":
            edges = np.unique(np.nanquantile(_numeric(real[c.name]), np.linspace(0, 1, 11)))
            r[c.name] = np.searchsorted(edges[1:-1], _numeric(real[c.name]), "right")
            s[c.name] = np.searchsorted(edges[1:-1], _numeric(synth[c.name]), "right")
        else:
            r[c.name] = real[c.name].fillna("<missing>").astype(str)
            s[c.name] = synth[c.name].fillna("<missing>").astype(str)
    return r, s


def column_pair_trends(real: pd.DataFrame, synth: pd.DataFrame, schema: TableSchema) -> float:
    r_disc, s_disc = _discretise(real, synth, schema)
    scores = []
    for a, b in itertools.combinations(schema.model_columns, 2):
        if a.kind == b.kind == "continuous":
            with np.errstate(invalid="ignore", divide="ignore"):  # a constant column has no correlation
                cr = np.corrcoef(_numeric(real[a.name]), _numeric(real[b.name]))[0, 1]
                cs = np.corrcoef(_numeric(synth[a.name]), _numeric(synth[b.name]))[0, 1]
            cr, cs = np.nan_to_num(cr), np.nan_to_num(cs)
            scores.append(1.0 - abs(cr - cs) / 2.0)
        else:
            jr = r_disc.groupby([a.name, b.name]).size() / len(r_disc)
            js = s_disc.groupby([a.name, b.name]).size() / len(s_disc)
            scores.append(1.0 - 0.5 * float(jr.subtract(js, fill_value=0.0).abs().sum()))
    return float(np.mean(scores))


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
    shapes = column_shapes(real, synth, schema)
    trends = column_pair_trends(real, synth, schema)
    metrics = {
        "column_shapes": float(np.mean(list(shapes.values()))),
        "column_pair_trends": trends,
    }
    metrics["quality_score"] = (metrics["column_shapes"] + trends) / 2.0
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
    metrics.update({f"shape_{k}": v for k, v in shapes.items()})
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
            bins = np.unique(np.nanquantile(a, np.linspace(0, 1, 31)))
            if len(bins) < 3:
                bins = 20
            ax.hist(a, bins=bins, alpha=0.5, density=True, label="real")
            ax.hist(b, bins=bins, alpha=0.5, density=True, label="synthetic")
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

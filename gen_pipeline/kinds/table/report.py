"""The table report's pictures and its HTML page: real vs synthetic marginals, the difference of
column associations, the gradient-boosted protocol beside its reference rows, and every metric
in one self-contained ``report.html``."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd

from gen_pipeline.kinds.table.metrics import (CLASSIFIERS, MISSING, REFERENCE_ROWS, _numeric, _subsample,
                                              association_matrix)
from gen_pipeline.kinds.table.schema import TableSchema


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def marginals_figure(real: pd.DataFrame, synth: pd.DataFrame, schema: TableSchema, path=None):
    """Real-vs-synthetic marginals, one panel per column; saved as a PNG to ``path`` (and closed)
    when given, otherwise the matplotlib figure is returned."""
    plt = _pyplot()
    cols = schema.model_columns
    ncols = 4
    nrows = (len(cols) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False)
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
            pr = real[c.name].fillna(MISSING).value_counts(normalize=True)
            ps = synth[c.name].fillna(MISSING).value_counts(normalize=True).reindex(pr.index, fill_value=0)
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
    if path is None:
        return fig
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return None


def association_figure(real: pd.DataFrame, synth: pd.DataFrame, schema: TableSchema):
    """Three heatmaps: Cramér's V of the real rows, of the synthetic rows, and synthetic - real."""
    plt = _pyplot()
    a_real = association_matrix(real, schema, real)
    a_syn = association_matrix(synth, schema, real)
    names = list(a_real.index)
    fig, axes = plt.subplots(1, 3, figsize=(18, 6.2))
    panels = [("real", a_real, "viridis", 0, 1), ("synthetic", a_syn, "viridis", 0, 1),
              ("synthetic - real", a_syn - a_real, "RdBu_r", -1, 1)]
    for ax, (title, m, cmap, lo, hi) in zip(axes, panels):
        im = ax.imshow(m.to_numpy(), cmap=cmap, vmin=lo, vmax=hi)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_title(f"Cramér's V, {title}", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    diff = np.abs((a_syn - a_real).to_numpy())[np.triu_indices(len(names), 1)]
    fig.suptitle(f"column associations (continuous columns in 10 real-quantile bins); mean |difference| = "
                 f"{diff.mean() if len(diff) else 0.0:.3f}", fontsize=11)
    fig.tight_layout()
    return fig


def report_figures(real: pd.DataFrame, synth: pd.DataFrame, schema: TableSchema, max_rows: int = 10_000,
                   seed: int = 0) -> dict:
    """{name: matplotlib figure}: ``marginals_real_vs_synthetic`` and ``association_difference``.
    The caller saves or closes them (``report_html`` closes them)."""
    real, synth = _subsample(real, max_rows, seed), _subsample(synth, max_rows, seed + 1)
    return {"marginals_real_vs_synthetic": marginals_figure(real, synth, schema),
            "association_difference": association_figure(real, synth, schema)}


def reference_table_html(metrics: dict[str, float]) -> str:
    """The gradient-boosted protocol's figures beside the two reference rows: metric | model |
    real held-out rows | independent marginals (a dash where a figure was not measured)."""
    def fmt(k: str) -> str:
        v = metrics.get(k)
        return "&ndash;" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"

    head = "".join(f"<th>{t}</th>" for t in ("metric", "this model", *REFERENCE_ROWS.values()))
    body = "".join(f"<tr><td>{m}</td><td>{fmt(m)}</td>" + "".join(f"<td>{fmt(f'ref_{r}_{m}')}</td>"
                                                                   for r in REFERENCE_ROWS) + "</tr>"
                   for m in ("quality_score_all_pairs", "quality_score", "detection_auc_gbt", "tstr_auc_gbt"))
    body += f"<tr><td>trtr_auc_gbt (train on real)</td><td>{fmt('trtr_auc_gbt')}</td><td></td><td></td></tr>"
    return ("<h2>The papers' protocol: gradient-boosted detection (0.5 = indistinguishable) and train-on-synthetic "
            "AUC, beside real held-out rows and independent column marginals</h2>"
            f"<table><tr>{head}</tr>{body}</table>")


def report_html(metrics: dict[str, float], figures: dict, title: str = "synthetic data quality") -> str:
    """One self-contained HTML page: headline metrics, the TSTR/TRTR table, privacy, the figures
    embedded as PNG. Closes the figures."""
    import html

    plt = _pyplot()

    def fmt(k: str) -> str:
        v = metrics.get(k)
        return "&ndash;" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"

    def rows(keys) -> str:
        return "".join(f"<tr><td>{html.escape(k)}</td><td>{fmt(k)}</td></tr>" for k in keys if k in metrics)

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 10px;text-align:right}td:first-child{text-align:left}</style>",
             f"</head><body><h1>{html.escape(title)}</h1>",
             "<h2>Fidelity</h2><table><tr><th>metric</th><th>value</th></tr>",
             rows(["quality_score", "column_shapes", "column_pair_trends", "quality_score_all_pairs",
                   "column_pair_trends_all_pairs", "detection_auc", "detection_auc_gbt", "association_diff_mean",
                   "test_neg_elbo_nats"] + sorted(k for k in metrics if k.startswith("roc_auc_"))), "</table>"]
    if "detection_auc_gbt" in metrics:
        parts.append(reference_table_html(metrics))
    if "tstr_f1_mean" in metrics:
        parts.append("<h2>Efficacy: train on synthetic (TSTR) vs train on real (TRTR), test on real held-out</h2>"
                     "<table><tr><th>classifier</th><th>F1 real</th><th>F1 synthetic</th>"
                     "<th>accuracy real</th><th>accuracy synthetic</th></tr>")
        for clf in (*CLASSIFIERS, "mean"):
            parts.append(f"<tr><td>{clf}</td><td>{fmt(f'trtr_f1_{clf}')}</td><td>{fmt(f'tstr_f1_{clf}')}</td>"
                         f"<td>{fmt(f'trtr_accuracy_{clf}')}</td><td>{fmt(f'tstr_accuracy_{clf}')}</td></tr>")
        parts.append("</table>")
    parts += ["<h2>Privacy: distance to closest training record, exact copies</h2><table>"
              "<tr><th>metric</th><th>value</th></tr>",
              rows(["dcr_median", "dcr_p05", "dcr_holdout_median", "dcr_holdout_p05", "dcr_ratio",
                    "exact_copy_share", "holdout_exact_copy_share"]), "</table>"]
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        parts.append(f"<h2>{html.escape(name)}</h2><img src='data:image/png;base64,"
                     f"{base64.b64encode(buf.getvalue()).decode()}'>")
    parts.append("</body></html>")
    return "".join(parts)

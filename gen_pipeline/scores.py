"""Scores, summarised once for every kind: row counts, quantiles and ROC-AUC against 0/1 label
columns, from per-task histograms merged on the driver (no second pass over the output).

The one ROC-AUC of the project: the score job's summaries, evaluate's held-out rows and the
image score job all go through ``ScoreSummary.roc_aucs``.
"""

from __future__ import annotations

import json

import numpy as np

# ROC-AUC is computed from a histogram of asinh(score) with this many bins per unit: scores in
# one bin count as ties, i.e. a relative resolution of about 0.05% for |score| > 1. On Shuttle's
# 1M rows that moves the AUC by less than 1e-5 from the exact (sorted) value.
AUC_BINS_PER_UNIT = 2000


def auc_from_histogram(bins: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> float:
    """ROC-AUC (Mann-Whitney: P(positive scores above negative), ties half) from per-bin counts."""
    order = np.argsort(bins)
    pos, neg = positives[order].astype(np.float64), negatives[order].astype(np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))


class ScoreSummary:
    """What the job reports of its scores, built per task and merged on the driver: row counts
    and a histogram of asinh(score) (overall, and per 0/1 label value), so no second pass over
    the output is needed. Bins are ``AUC_BINS_PER_UNIT`` per unit of asinh(score)."""

    def __init__(self, labels: list[str], column: str = "score"):
        self.column = column
        self.rows = self.scored = 0
        self.bins: dict[int, int] = {}
        self.labels: dict[str, dict[int, list[int]]] = {label: {} for label in labels}

    def add(self, table) -> None:
        """Count one scored Arrow table (``score_table``'s output)."""
        score = np.asarray(table.column(self.column).to_numpy(zero_copy_only=False), dtype=np.float64)
        ok = ~np.isnan(score)
        self.rows += len(score)
        self.scored += int(ok.sum())
        b = np.floor(np.arcsinh(score[ok]) * AUC_BINS_PER_UNIT).astype(np.int64)
        for k, n in zip(*np.unique(b, return_counts=True)):
            self.bins[int(k)] = self.bins.get(int(k), 0) + int(n)
        for label, hist in self.labels.items():
            y = np.asarray(table.column(label).to_numpy(zero_copy_only=False), dtype=np.float64)[ok]
            for value, slot in ((1.0, 0), (0.0, 1)):
                for k, n in zip(*np.unique(b[y == value], return_counts=True)):
                    hist.setdefault(int(k), [0, 0])[slot] += int(n)

    def to_json(self) -> str:
        return json.dumps({"column": self.column, "rows": self.rows, "scored": self.scored, "bins": self.bins,
                           "labels": self.labels})

    @classmethod
    def merge(cls, parts: list[str], labels: list[str], column: str = "score") -> "ScoreSummary":
        out = cls(labels, column)
        for text in parts:
            d = json.loads(text)
            out.rows += d["rows"]
            out.scored += d["scored"]
            for k, n in d["bins"].items():
                out.bins[int(k)] = out.bins.get(int(k), 0) + n
            for label, hist in d["labels"].items():
                for k, (pos, neg) in hist.items():
                    slot = out.labels[label].setdefault(int(k), [0, 0])
                    slot[0] += pos
                    slot[1] += neg
        return out

    def quantiles(self, qs: tuple[float, ...]) -> list[float] | None:
        """Score quantiles read off the histogram (bin centres: about 0.05% relative error)."""
        if not self.bins:
            return None
        bins = np.array(sorted(self.bins))
        cum = np.cumsum([self.bins[k] for k in bins])
        at = [bins[min(np.searchsorted(cum, q * cum[-1]), len(bins) - 1)] for q in qs]
        return [float(np.sinh((k + 0.5) / AUC_BINS_PER_UNIT)) for k in at]

    def roc_aucs(self) -> dict[str, float]:
        out = {}
        for label, hist in self.labels.items():
            if hist:
                b = np.array(list(hist))
                counts = np.array(list(hist.values()))
                auc = auc_from_histogram(b, counts[:, 0], counts[:, 1])
                if not np.isnan(auc):
                    out[f"roc_auc_{label}" + ("" if self.column == "score" else f"_{self.column}")] = auc
        return out

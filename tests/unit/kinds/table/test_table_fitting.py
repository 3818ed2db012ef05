"""The continuous columns' one-pass summaries: partitions merged into moments and quantiles."""

import numpy as np

from gen_pipeline.kinds.table.fitting import merge_summaries, partition_summary


def test_merged_partition_summaries_give_moments_and_quantiles_within_their_rank_bound():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.round(np.exp(rng.normal(3, 1.2, 30_000)), 2), np.zeros(9_000), [np.nan] * 500])
    rng.shuffle(x)
    parts = np.array_split(x, 3)
    probs = np.linspace(0, 1, 201)
    points = 1_000
    merged = merge_summaries([partition_summary(p, points // 2, (1.0, 0.5)) for p in parts], probs)
    v = np.sort(x[~np.isnan(x)])
    assert merged["nulls"] == 500 and merged["min"] == v[0] and merged["max"] == v[-1]
    assert np.isclose(merged["mean"], v.mean()) and np.isclose(merged["std"], v.std())
    assert merged["mods"] == [float(np.mod(v, 1.0).max()), float(np.mod(v, 0.5).max())]
    q = np.asarray(merged["q"])
    assert q[0] == v[0] and q[-1] == v[-1] and np.all(np.diff(q) >= 0)
    # each quantile is a value whose rank is within n / points (+ half a value per partition) of p * n
    lo = np.searchsorted(v, q, side="left")
    hi = np.searchsorted(v, q, side="right")
    target = probs * len(v)
    slack = len(v) / points + len(parts) / 2
    assert np.all((target >= lo - slack) & (target <= hi + slack))


def test_a_partition_without_values_merges_to_nulls_only():
    empty = partition_summary(np.array([np.nan, np.nan]), 10, (60.0,))
    assert merge_summaries([empty], [0.0, 1.0]) == {"min": None, "max": None, "mean": None, "std": None,
                                                    "nulls": 2, "q": None, "mods": []}
    one = partition_summary(np.array([5.0]), 10)
    assert merge_summaries([empty, one], [0.0, 0.5, 1.0])["q"] == [5.0, 5.0, 5.0]


def test_category_counts_merged_from_partitions_are_exact_and_a_partition_with_too_many_values_defers(monkeypatch):
    """Each partition counts its values (nulls too); the driver sums them and keeps the ``limit``
    most frequent, ties by the value as text. A partition with more distinct values than
    ``PARTITION_MAX_VALUES`` sends none for that column, which is then named for Spark to count."""
    import collections

    import pyarrow as pa

    from gen_pipeline.kinds.table import fitting
    from gen_pipeline.kinds.table.schema import Column, TableSchema

    schema = TableSchema(columns=(Column("g", "categorical", "string"), Column("k", "categorical", "int"),
                                  Column("x", "continuous", "float")))
    rng = np.random.default_rng(0)
    g = rng.choice(["a", "b", "c", "d", None], 3000, p=[0.4, 0.3, 0.15, 0.1, 0.05]).tolist()
    k = rng.integers(0, 40, 3000)
    x = rng.normal(size=3000)
    plan = fitting.PartitionSummaries(schema, n_points=200)
    monkeypatch.setattr(fitting, "PARTITION_MAX_VALUES", 35)
    parts = []
    for lo, hi in ((0, 1000), (1000, 1100), (1100, 3000)):
        t = pa.table({"g": pa.array(g[lo:hi], pa.string()), "k": pa.array(k[lo:hi]), "x": pa.array(x[lo:hi])})
        parts.append(plan.summarise([t.slice(0, 50), t.slice(50)]))  # in two batches
    stats, counted, overflow = plan.merge(parts, [0.0, 0.5, 1.0], limit=3)
    want = collections.Counter(g).most_common()
    assert counted["g"] == [(v, c) for v, c in sorted(want, key=lambda r: (-r[1], "" if r[0] is None else r[0]))][:3]
    assert overflow == ["k"] and "k" not in counted  # 40 values in the big partitions, more than 35
    assert stats["x__min"] == x.min() and stats["x__max"] == x.max() and np.isclose(stats["x__mean"], x.mean())

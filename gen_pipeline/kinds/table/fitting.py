"""Fitting a table's encodings from Spark aggregates: nothing but small summaries reaches the
driver (quantiles, moments, category counts, the lookup tables of columns that are a function of
one category), plus a bounded seeded sample for the VGM mixtures and the lookup candidates. The
result is the versioned spec ``transforms.TableTransformer`` reads."""

from __future__ import annotations

import numpy as np

from gen_pipeline.errors import PipelineError
from gen_pipeline.kinds.table.schema import TableSchema, base_dtype, decimal_of
from gen_pipeline.kinds.table.transforms import (MAX_CATEGORIES, MAX_RARE_VALUES, OTHER, SPEC_VERSION, VGM_MAX_MODES,
                                                 VGM_MAX_POINTS, VGM_MIN_WEIGHT, VGM_POINT_SHARE, VGM_SAMPLE_ROWS,
                                                 _NUMERIC_KINDS, _TIME_STEPS, category_codes)


def fit_vgm(values: np.ndarray, max_modes: int = VGM_MAX_MODES, seed: int = 0,
            point_share: float = VGM_POINT_SHARE, discrete_values: int = 0) -> dict:
    """Modes of one column's (non-null) values: point masses, then a Gaussian mixture.

    A column of whole numbers with at most ``discrete_values`` distinct values in the sample
    (Adult's age, hours per week, capital gain) is all point masses, one mode per value, so its
    spikes and gaps are learned as the categories they are (a value outside the sample decodes
    to the nearest one). 0 turns this off.

    A single value that holds at least ``point_share`` of the rows (Adult's capital_gain = 0,
    92% of rows; hours_per_week = 40) is a mode of its own with no width (``stds`` 0), so it
    decodes to exactly that value: a Gaussian around a spike smears it over neighbouring values
    once the model's output noise is added (the mixed-type encoding of CTAB-GAN, Zhao et al.
    2021). The remaining values get a Dirichlet-process Gaussian mixture whose weak concentration
    prior switches surplus components off, so the column has as many modes as its data shows.
    ``weights`` are shares of all rows.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if len(np.unique(x)) < 2:  # a constant column: one point mass
        return {"means": [float(x[0]) if len(x) else 0.0], "stds": [0.0], "weights": [1.0]}
    points = discrete_points(x, discrete_values)
    if points is not None:
        return points
    distinct, counts = np.unique(x, return_counts=True)
    top = np.argsort(-counts, kind="stable")[:VGM_MAX_POINTS]
    points = distinct[top[counts[top] >= point_share * len(x)]]
    means, stds, weights = [], [], []
    for v in points:
        means.append(float(v))
        stds.append(0.0)
        weights.append(float(np.mean(x == v)))
    rest = x[~np.isin(x, points)]
    if len(np.unique(rest)) >= 2:
        gm = BayesianGaussianMixture(n_components=min(max_modes, len(rest)),
                                     weight_concentration_prior_type="dirichlet_process",
                                     weight_concentration_prior=1e-3, max_iter=200, n_init=1, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm.fit(rest.reshape(-1, 1))
        share = len(rest) / len(x)
        keep = gm.weights_ * share > VGM_MIN_WEIGHT
        w = gm.weights_[keep] / gm.weights_[keep].sum() * share
        means += gm.means_[keep, 0].tolist()
        stds += np.sqrt(gm.covariances_[keep].reshape(-1)).clip(1e-6).tolist()
        weights += w.tolist()
    elif len(rest):  # one leftover value: a point mass too
        means.append(float(rest[0]))
        stds.append(0.0)
        weights.append(len(rest) / len(x))
    total = sum(weights)
    return {"means": means, "stds": stds, "weights": [w / total for w in weights]}


def discrete_points(values: np.ndarray, discrete_values: int) -> dict | None:
    """One point mass per value (a VGM entry with every ``stds`` 0) when ``values`` (non-null) are
    whole numbers with at least 2 and at most ``discrete_values`` distinct values; else None."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    distinct, counts = np.unique(x, return_counts=True)
    if not 2 <= len(distinct) <= discrete_values or not np.all(distinct == np.round(distinct)):
        return None
    return {"means": distinct.tolist(), "stds": [0.0] * len(distinct), "weights": (counts / len(x)).tolist()}


def _numeric_expr(c):
    """A column as a double: datetimes as wall-clock microseconds since 1970, dates as days."""
    from pyspark.sql import functions as F

    if c.kind == "datetime":
        return F.expr(f"timestampdiff(MICROSECOND, TIMESTAMP_NTZ'1970-01-01 00:00:00', "
                      f"cast(`{c.name}` as timestamp_ntz))").cast("double")
    if c.kind == "date":
        return F.expr(f"unix_date(`{c.name}`)").cast("double")
    return F.col(f"`{c.name}`").cast("double")


def fit_spec(df, schema: TableSchema, method: str = "quantile", num_quantiles: int = 200,
             sample_rows: int = VGM_SAMPLE_ROWS, point_share: float = VGM_POINT_SHARE,
             max_categories: int = MAX_CATEGORIES, discrete_values: int = 0, lookups: bool = False,
             partitions: dict | None = None) -> dict:
    """Fit every column's encoding from aggregates of a Spark DataFrame of typed rows.

    Only summaries reach the driver, plus (for ``vgm``, ``discrete_values`` or ``lookups``) a
    seeded sample of about ``sample_rows`` rows to fit the mixtures on and to find the columns
    that ``lookups`` regenerates from another (``lookup_columns``). ``partitions``: the value of a
    ``Summaries`` accumulator that every partition of ``df`` added its ``PartitionSummaries`` to
    already (the validation pass), which spares the passes that would make them and the sample.
    """
    from pyspark.sql import functions as F

    cont, _ = summarised_columns(schema)
    for c in schema.columns:
        if c.kind == "text":
            import sys

            print(f"[preprocess] warning: column {c.name} is free text: left out of the model and of generated rows",
                  file=sys.stderr, flush=True)
    probs = np.linspace(0.0, 1.0, num_quantiles + 1).tolist()
    aggs = [F.count(F.lit(1)).alias("__n")]
    aggs += [a for c in schema.model_columns if c.kind in ("identifier", "constant") for a in _unmodelled_aggs(c)]
    stats = df.agg(*aggs).first().asDict()
    n_rows = int(stats["__n"])
    if n_rows == 0:
        raise PipelineError("no usable rows to fit the transforms on (every row was quarantined?)")
    continuous, counted = column_summaries(df, schema, probs, max_categories + MAX_RARE_VALUES, partitions)
    stats.update(continuous)

    sample = None  # the VGM's mixtures, the columns of few whole numbers and the lookups are fitted on it
    picked = sampled_columns(schema, method, discrete_values, lookups)
    if picked and partitions is not None and partitions.get(SAMPLE) is not None:
        sample = sample_frame(partitions[SAMPLE], sample_rows)
    elif picked:
        fraction = min(1.0, sample_rows / n_rows)
        sample = df.sample(False, fraction, seed=0).select(*[_value_expr(c).alias(c.name) for c in picked]).toPandas()

    columns = []
    for c in schema.model_columns:
        if c.kind in ("identifier", "constant"):
            columns.append(_fit_unmodelled(c, stats))
            continue
        if c.kind in _NUMERIC_KINDS and stats[f"{c.name}__min"] is None:  # all null: nothing to learn
            columns.append({"name": c.name, "kind": "constant", "dtype": c.dtype, "value": None})
            continue
        if c.kind in _NUMERIC_KINDS:
            entry = {
                "name": c.name, "kind": c.kind, "dtype": c.dtype, "method": method,
                "min": float(stats[f"{c.name}__min"]), "max": float(stats[f"{c.name}__max"]),
                "mean": float(stats[f"{c.name}__mean"]),
                "std": float(stats[f"{c.name}__std"] or 0.0) or 1.0,
                "has_nulls": int(stats[f"{c.name}__nulls"]) > 0,
                "null_share": int(stats[f"{c.name}__nulls"]) / n_rows,
            }
            if c.kind == "datetime":
                entry["step"] = next((s for s in _TIME_STEPS if not stats[f"{c.name}__mod{s}"]), 1)
            points = discrete_points(sample[c.name].to_numpy(), discrete_values) if sample is not None else None
            if points is not None:  # few whole numbers, whatever the method: one point mass per value
                entry.update(method="vgm", **points)
            else:  # the training quantiles: the quantile method's table, and every method's calibration target
                entry["quantiles"] = [float(v) for v in stats[f"{c.name}__q"]]
                entry["probs"] = probs
            columns.append(entry)
        else:
            # One row per category, the most frequent first, at most max_categories + MAX_RARE_VALUES.
            ordered = sorted(counted[c.name], key=lambda r: (-r[1], "" if r[0] is None else str(r[0])))
            if decimal_of(c.dtype):  # decimals as their exact text on the column's scale (JSON has no decimal)
                from gen_pipeline.kinds.table.transforms import decimal_text

                ordered = [(decimal_text(v, c.dtype), k) for v, k in ordered]
            entry = {
                "name": c.name, "kind": c.kind, "dtype": c.dtype,
                "categories": [v for v, _ in ordered],  # None is the missing category
                "frequencies": [k / n_rows for _, k in ordered],
            }
            if len(ordered) > max_categories:
                entry = _cap_categories(entry, max_categories)
            columns.append(entry)
    if lookups:
        found = lookup_columns(df, schema, columns, sample, n_rows)
        columns = [found.get(c["name"], c) for c in columns]
        for name, rule in value_rules(df, columns, sample).items():
            next(c for c in columns if c["name"] == name)["rules"] = rule
    for entry in columns:  # the mixtures last: a looked-up column needs none
        if entry.get("method") == "vgm" and "means" not in entry:  # (not few whole numbers: discrete_points)
            entry.update(fit_vgm(sample[entry["name"]].to_numpy(), point_share=point_share))
    return {"version": SPEC_VERSION, "schema": schema.to_dict(), "columns": columns, "fitted_rows": n_rows}


LOOKUP_MAX_KEYS = 10_000  # a determining column's distinct values: the rows of its lookup table
LOOKUP_MIN_ROWS_PER_KEY = 5  # fewer rows per value, and agreement within each value is too likely by chance


def lookup_columns(df, schema: TableSchema, columns: list[dict], sample, n_rows: int) -> dict[str, dict]:
    """{column: its ``lookup`` entry} for each column that is a function of one categorical
    column in every training row (Adult's ``education_num`` of ``education``; an airport's
    name, latitude and time zone of its code): such a column is not modelled, and is regenerated
    by looking its value up from the generated determining value, so the two always agree.

    Candidates come from ``sample`` (pandas: one value per group of the determining column),
    then each determining column's candidates are checked on every row of ``df`` by one
    group-by (the same value, or null, in each of its groups); the lookup table is that group-by.
    A determining column is categorical or boolean with 2 to LOOKUP_MAX_KEYS values and at least
    LOOKUP_MIN_ROWS_PER_KEY rows per value; it is never itself looked up. Decimal columns are
    left as they are."""
    from pyspark.sql import functions as F

    by_name = {c.name: c for c in schema.model_columns}

    def n_values(entry: dict) -> int:
        return len(entry["categories"]) - (OTHER in entry["categories"]) + len(entry.get("other_values", []))

    keys = [e for e in columns if "categories" in e and not decimal_of(e["dtype"])
            and 2 <= n_values(e) <= LOOKUP_MAX_KEYS and n_rows >= LOOKUP_MIN_ROWS_PER_KEY * n_values(e)]
    found: dict[str, dict] = {}
    determining: set[str] = set()
    for key in keys:
        a = key["name"]
        if a in found or a not in sample.columns:
            continue
        groups = sample.groupby(a, dropna=False, sort=False)
        # the same value (or null) in every sampled row of each group of the determining column
        candidates = [e for e in columns if e["name"] not in (a, *found, *determining) and e["name"] in sample.columns
                      and e["kind"] not in ("identifier", "constant") and not decimal_of(e["dtype"])
                      and (groups[e["name"]].nunique(dropna=False) <= 1).all()]
        if not candidates:
            continue
        aggs = [F.count(F.lit(1)).alias("__n")]
        for i, e in enumerate(candidates):
            value = _value_expr(by_name[e["name"]])
            aggs += [F.min(value).alias(f"__lo{i}"), F.max(value).alias(f"__hi{i}"), F.count(value).alias(f"__c{i}")]
        rows = df.groupBy(F.col(f"`{a}`")).agg(*aggs).collect()
        for i, e in enumerate(candidates):
            if all(r[f"__c{i}"] == 0 or (r[f"__c{i}"] == r["__n"] and r[f"__lo{i}"] == r[f"__hi{i}"]) for r in rows):
                found[e["name"]] = {"name": e["name"], "kind": e["kind"], "dtype": e["dtype"], "method": "lookup",
                                    "from": a, "keys": [r[0] for r in rows], "values": [r[f"__lo{i}"] for r in rows]}
                determining.add(a)
    return found


RULE_MIN_ROWS = 300  # sampled rows a value needs before its rule is considered
RULE_SAMPLE_SHARE = 0.995  # the share of those rows that agree, for a candidate
RULE_MIN_SHARE = 0.998  # the share of all the value's rows that agree, for a rule (Adult's wives:
# 2,330 over its two files, 3 recorded male: 0.9987)


def value_rules(df, columns: list[dict], sample) -> dict[str, dict]:
    """{column: its ``rules``} for each categorical column B whose value is fixed, in nearly every
    row, by some values of another categorical column A (Adult: ``relationship`` Husband -> ``sex``
    Male, Wife -> Female), though B is not a function of A (Own-child is either sex). Such rows
    are then generated with that value: ``{"from": A, "when": [a, ...], "then": [b, ...]}``, so
    a model that blurs the two columns never writes a female husband.

    A value a of A is a candidate when it has at least RULE_MIN_ROWS rows in ``sample`` and at
    least RULE_SAMPLE_SHARE of them hold one value b (looser, so one exception among a few
    hundred sampled rows does not hide a rule); it makes a rule when at least RULE_MIN_SHARE of
    its rows in ``df`` hold b (one aggregate over grouping sets for every candidate). A and B are
    categorical or boolean and not capped (no shared slot of rare values); B has one A; a
    column that is a rule's B is never another's A, so rules never chain."""
    from pyspark.sql import functions as F

    if sample is None or not len(sample):
        return {}
    cats = [e for e in columns if "categories" in e and OTHER not in e["categories"] and e["name"] in sample.columns
            and not decimal_of(e["dtype"]) and 2 <= len(e["categories"]) <= LOOKUP_MAX_KEYS]
    codes = {e["name"]: category_codes(e["categories"], sample[e["name"]]) for e in cats}
    candidates: dict[str, dict[str, dict]] = {}  # A -> B -> {a index: b index}
    for a in cats:
        ka = len(a["categories"])
        for b in cats:
            if b is a:
                continue
            kb = len(b["categories"])
            ca, cb = codes[a["name"]], codes[b["name"]]
            ok = (ca >= 0) & (cb >= 0)
            table = np.bincount(ca[ok] * kb + cb[ok], minlength=ka * kb).reshape(ka, kb)
            size, top = table.sum(1), table.max(1)
            fixed = (size >= RULE_MIN_ROWS) & (top >= RULE_SAMPLE_SHARE * size)
            if fixed.any() and not (size[size > 0] == top[size > 0]).all():  # (a function of A: a lookup's job)
                candidates.setdefault(a["name"], {})[b["name"]] = {int(i): int(table[i].argmax())
                                                                   for i in np.flatnonzero(fixed)}
    if not candidates:
        return {}
    # every candidate pair's counts in one aggregate over grouping sets, a set per (A, B)
    pairs = [(a, b) for a, found in candidates.items() for b in found]
    names = list(dict.fromkeys(n for pair in pairs for n in pair))
    cols = [F.col(f"`{n}`") for n in names]
    where = {n: i for i, n in enumerate(names)}
    sets = list(dict.fromkeys(frozenset(pair) for pair in pairs))  # (A, B) and (B, A): one set
    counts = df.groupingSets([[cols[where[n]] for n in sorted(st, key=where.get)] for st in sets], *cols) \
        .agg(F.count(F.lit(1)).alias("__n"), *[F.grouping(c).alias(f"__g{i}") for i, c in enumerate(cols)]).collect()
    by_set: dict[frozenset, list[tuple[dict, int]]] = {st: [] for st in sets}
    for r in counts:
        grouped = frozenset(n for n in names if r[f"__g{where[n]}"] == 0)
        if grouped in by_set:
            by_set[grouped].append(({n: r[where[n]] for n in grouped}, r["__n"]))
    rules: dict[str, dict] = {}
    sources: set[str] = set()
    by_name = {e["name"]: e for e in columns}
    for a_name, found in candidates.items():  # in column order: a B is never a later A, an A never a B
        if a_name in rules:
            continue
        a_cats = by_name[a_name]["categories"]
        for b_name, fixed in found.items():
            if b_name in rules or b_name in sources:
                continue
            b_cats, pair = by_name[b_name]["categories"], by_set[frozenset((a_name, b_name))]
            when, then = [], []
            for ai, bi in fixed.items():
                total = sum(n for v, n in pair if v[a_name] == a_cats[ai])
                agree = sum(n for v, n in pair if v[a_name] == a_cats[ai] and v[b_name] == b_cats[bi])
                if total and agree >= RULE_MIN_SHARE * total:
                    when.append(a_cats[ai])
                    then.append(b_cats[bi])
            if when:
                rules[b_name] = {"from": a_name, "when": when, "then": then}
                sources.add(a_name)
    return rules


def _cap_categories(entry: dict, max_categories: int) -> dict:
    """Keep the ``max_categories - 1`` most frequent values (and the missing category); the rest
    share the slot ``OTHER`` and are kept, with their frequencies, to be drawn when decoded."""
    cats, freqs = entry["categories"], entry["frequencies"]
    keep = [i for i, c in enumerate(cats) if c is None][:1]
    keep += [i for i, c in enumerate(cats) if c is not None][:max_categories - 1 - len(keep)]
    keep = sorted(keep)
    rare = [i for i in range(len(cats)) if i not in set(keep)]
    return {**entry, "categories": [cats[i] for i in keep] + [OTHER],
            "frequencies": [freqs[i] for i in keep] + [float(sum(freqs[i] for i in rare))],
            "other_values": [cats[i] for i in rare], "other_frequencies": [freqs[i] for i in rare]}


QUANTILE_POINTS = 10_000  # summary points per column: quantiles within 1/10,000 of the rows in rank


PARTITION_MAX_VALUES = 100_000  # a partition's distinct values of a column sent to the driver, at most


def summarised_columns(schema: TableSchema) -> tuple[list, list[str]]:
    """The columns ``fit_spec`` summarises: (continuous, datetime and date columns; the names of
    the categorical ones)."""
    cont = [c for c in schema.model_columns if c.kind in _NUMERIC_KINDS]
    categorical = [c.name for c in schema.model_columns
                   if c.kind not in _NUMERIC_KINDS and c.kind not in ("identifier", "constant")]
    return cont, categorical


def _as_numbers(column, kind: str) -> np.ndarray:
    """A typed Arrow column as float64 (null: NaN): datetimes as wall-clock microseconds since 1970
    (the session's zone is UTC, so an instant's value is its wall clock there), dates as days."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if kind == "datetime":
        column = pc.cast(pc.cast(column, pa.timestamp("us")), pa.int64())
    elif kind == "date":
        column = pc.cast(column, pa.int32())
    return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)


class PartitionSummaries:
    """Per-partition summaries of the columns ``fit_spec`` fits, made where a partition's typed
    rows already are (a standalone pass over the rows, or the validation pass as it reads them)
    and merged on the driver.

    Continuous columns: each partition's values sorted (numpy), its moments and ``n_points / 2``
    order statistics with the number of values each stands for (``partition_summary``), merged
    by ``merge_summaries``. A quantile's rank is off by at most (values / ``n_points``) plus half
    a value per partition: the bound of Spark's ``percentile_approx(accuracy=n_points)``, whose
    per-row buffers made it most of the fit's time (benchmarks/RESULTS.md). Categorical columns:
    each partition's exact count of every value (Arrow's ``value_counts``), summed on the
    driver; a partition with more than ``PARTITION_MAX_VALUES`` distinct values of a column
    sends none, and that column is counted by a Spark aggregate instead (``category_counts``).
    What reaches the driver grows with the partitions, not with the rows."""

    def __init__(self, schema: TableSchema, n_points: int = QUANTILE_POINTS, sampled: list | None = None,
                 sample_rows: int = 0):
        self.cont, self.categorical = summarised_columns(schema)
        self.n_points = n_points
        self.sampled, self.sample_rows = sampled or [], sample_rows  # (``sampled_columns``): a sample of them too

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cont] + self.categorical

    def summarise(self, tables) -> dict:
        """A partition's typed rows (Arrow tables or batches with the columns of ``names``) -> its summary."""
        part = self.start()
        for t in tables:
            part.add(t)
        return part.finish()

    def start(self, partition: int = 0) -> "_Partition":
        """Partition ``partition``'s summary, made one batch at a time (``add``, then ``finish``)."""
        return _Partition(self, partition)

    def merge(self, parts: list[dict], probs: list[float], limit: int) -> tuple[dict, dict, list[str]]:
        """Partition summaries -> (continuous statistics keyed ``{name}__min`` etc., as
        ``merge_summaries`` gives them plus ``{name}__mod{step}`` for datetimes; each categorical
        column's (value, count) pairs, at most ``limit``, the most frequent first; the columns
        some partition sent no counts for)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        stats: dict = {}
        for k, c in enumerate(self.cont):
            merged = merge_summaries([p["cont"][k] for p in parts], probs)
            stats.update({f"{c.name}__{key}": v for key, v in merged.items() if key != "mods"})
            for step, m in zip(_TIME_STEPS if c.kind == "datetime" else (), merged["mods"]):
                stats[f"{c.name}__mod{step}"] = m
        counted: dict[str, list[tuple]] = {}
        overflow = []
        for j, n in enumerate(self.categorical):
            if any(p["cats"][j] is None and p["rows"] for p in parts):
                overflow.append(n)
                continue
            got = [p["cats"][j] for p in parts if p["cats"][j] is not None]
            if not got:
                counted[n] = []
                continue
            summed = _summed(pa.concat_tables(got))
            order = pc.sort_indices(pa.table({"c": summed.column("counts"), "t": pc.cast(summed.column("values"),
                                                                                          pa.string())}),
                                    sort_keys=[("c", "descending"), ("t", "ascending")], null_placement="at_start")
            top = summed.take(order[:limit])
            counted[n] = list(zip(top.column("values").to_pylist(), top.column("counts").to_pylist()))
        return stats, counted, overflow


class _Partition:
    """One partition's summary in the making: the continuous values of the batches added so far
    (float64, NaN for null), their categories' counts, and the rows of the smallest priorities
    (a seeded uniform draw per row) among them, at most ``sample_rows``."""

    def __init__(self, plan: PartitionSummaries, partition: int):
        self.plan, self.rows, self.partition = plan, 0, partition
        self.numbers: list[list[np.ndarray]] = [[] for _ in plan.cont]
        self.counts: list[list] = [[] for _ in plan.categorical]
        self.rng = np.random.default_rng([SAMPLE_SEED, partition])
        self.sample: list = []  # tables of sampled columns with each row's priority ``__u`` and index ``__i``

    def add(self, table) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        numbers = {c.name: _as_numbers(table.column(c.name), c.kind) for c in self.plan.cont}
        if self.plan.sampled:  # a uniform priority per row; the sample is the rows of the smallest
            u = self.rng.random(table.num_rows)
            pool = self.sample[0] if self.sample else None
            full = pool is not None and pool.num_rows >= self.plan.sample_rows
            rows = np.flatnonzero(u < pc.max(pool.column("__u")).as_py()) if full else np.arange(table.num_rows)
            if len(rows):  # only rows that can still enter the sample are copied
                got = {c.name: pa.array(numbers[c.name][rows]) if c.name in numbers else table.column(c.name).take(rows)
                       for c in self.plan.sampled}
                got.update(__u=u[rows], __i=self.rows + rows)
                self.sample = [_smallest(pa.concat_tables([t for t in (pool, pa.table(got)) if t is not None]),
                                         self.plan.sample_rows)]
        self.rows += table.num_rows
        for k, c in enumerate(self.plan.cont):
            self.numbers[k].append(numbers[c.name])
        for j, n in enumerate(self.plan.categorical):
            self.counts[j].append(pc.value_counts(table.column(n)))

    def finish(self) -> dict:
        import pyarrow as pa

        cont = [partition_summary(np.concatenate(v) if v else np.zeros(0), max(1, self.plan.n_points // 2),
                                  list(_TIME_STEPS) if c.kind == "datetime" else [])
                for c, v in zip(self.plan.cont, self.numbers)]
        cats = []  # per column: the partition's values and counts, or None when it has too many
        for parts in self.counts:
            parts = [pa.RecordBatch.from_struct_array(p) for p in parts if len(p)]
            table = _summed(pa.Table.from_batches(parts)) if parts else None
            cats.append(table if table is None or table.num_rows <= PARTITION_MAX_VALUES else None)
        out = {"rows": self.rows, "cont": cont, "cats": cats}
        if self.sample:
            t = self.sample[0]
            out["sample"] = t.append_column("__pid", pa.array(np.full(t.num_rows, self.partition, dtype=np.int32)))
        return out


SAMPLE = "sample"  # the key of the sample in a ``Summaries`` accumulator's value
SAMPLE_SEED = 20_241_130


def sampled_columns(schema: TableSchema, method: str, discrete_values: int, lookups: bool) -> list:
    """The columns ``fit_spec`` needs a sample of (none: no sample): the continuous ones for the
    VGM's mixtures and the columns of few whole numbers, every modelled one for the lookups."""
    cont, _ = summarised_columns(schema)
    if lookups:
        return [c for c in schema.model_columns if c.kind not in ("identifier", "constant")]
    return cont if cont and (method == "vgm" or discrete_values) else []


def _smallest(table, k: int):
    """The ``k`` rows of ``table`` with the smallest ``__u``."""
    if table.num_rows <= k:
        return table
    u = table.column("__u").to_numpy()
    return table.take(np.sort(np.argpartition(u, k - 1)[:k]))


def sample_frame(pool, k: int):
    """The pooled sample (``Summaries``) as the pandas frame ``fit_spec`` fits on: the ``k`` rows of
    the smallest priorities over every partition (a uniform sample without replacement), in
    partition and row order."""
    t = _smallest(pool, k)
    order = np.lexsort((t.column("__i").to_numpy(), t.column("__pid").to_numpy()))
    return t.take(order).drop(["__u", "__i", "__pid"]).to_pandas()


class Summaries:
    """A Spark accumulator's parameter (``SparkContext.accumulator({}, Summaries(k))``) whose value
    maps a partition's id to the ``PartitionSummaries`` its task added, and keeps under
    ``SAMPLE`` the ``k`` sampled rows of the smallest priorities over all of them, so what the
    driver holds does not grow with the partitions. A task that runs again (a retry, a lost block
    recomputed) replaces its partition's entry and its sampled rows instead of adding to them."""

    def __init__(self, sample_rows: int = 0):
        self.k = sample_rows

    def zero(self, value: dict) -> dict:
        return {}

    def addInPlace(self, a: dict, b: dict) -> dict:  # noqa: N802 - pyspark's name
        import pyarrow as pa
        import pyarrow.compute as pc

        pools = [b.get(SAMPLE)] + [s.get(SAMPLE) for k, s in b.items() if k != SAMPLE]
        for k, s in b.items():
            if k != SAMPLE:
                a[k] = {key: v for key, v in s.items() if key != SAMPLE}
        pools = [p for p in pools if p is not None]
        if pools:
            pool = a.get(SAMPLE)
            if pool is not None:  # rows of a partition that ran again are replaced, not added to
                again = pa.array([k for k in b if k != SAMPLE] + [int(x) for p in pools for x in
                                                                  pc.unique(p.column("__pid")).to_pylist()],
                                 pa.int32())
                pool = pool.filter(pc.invert(pc.is_in(pool.column("__pid"), again)))
            a[SAMPLE] = _smallest(pa.concat_tables([t for t in [pool, *pools] if t is not None]), self.k)
        return a


def _summed(table):
    """A table of ``values`` and ``counts`` with each value once, its counts summed."""
    import pyarrow as pa

    g = table.group_by("values").aggregate([("counts", "sum")])
    return pa.table({"values": g.column("values"), "counts": g.column("counts_sum")})


def column_summaries(df, schema: TableSchema, probs: list[float], limit: int,
                     partitions: dict | None = None) -> tuple[dict, dict[str, list[tuple]]]:
    """(The continuous columns' statistics, the categorical columns' counts) of ``df``
    (``PartitionSummaries``): from ``partitions`` (a ``Summaries`` accumulator's value), the
    summaries the validation pass made of every partition's usable rows as it read them, else
    from one pass over ``df``."""
    import pickle

    plan = PartitionSummaries(schema)
    if not plan.names:
        return {}, {}
    if partitions is not None:
        partitions = [partitions[k] for k in sorted(k for k in partitions if k != SAMPLE)]
    else:
        def summarise(batches):
            import pyarrow as pa
            from pyspark import TaskContext

            blob = pickle.dumps(plan.summarise(batches))
            yield pa.RecordBatch.from_pydict({"part": [TaskContext.get().partitionId()], "blob": [blob]},
                                             schema=pa.schema([("part", pa.int32()), ("blob", pa.binary())]))

        rows = df.select(*[f"`{n}`" for n in plan.names]).mapInArrow(summarise, "part int, blob binary").collect()
        partitions = [pickle.loads(r["blob"]) for r in sorted(rows, key=lambda r: r["part"])]
    stats, counted, overflow = plan.merge(partitions, probs, limit)
    counted.update(category_counts(df, overflow, limit))
    return stats, counted


def partition_summary(x: np.ndarray, points: int, steps=()) -> dict:
    """One partition's values of a column (NaN: null) -> count, nulls, min, max, mean, m2 (sum of
    squared deviations), the largest remainder by each of ``steps``, and ``points`` order
    statistics: the sorted values cut into ``points`` runs of near-equal length, each run
    represented by its largest value (``points``) and its length (``weights``), as arrays."""
    nulls = np.isnan(x)
    v = np.sort(x[~nulls])
    n = len(v)
    if n == 0:
        return {"count": 0, "nulls": int(nulls.sum()), "min": None, "max": None, "mean": None, "m2": None,
                "mods": [None] * len(steps), "points": np.zeros(0), "weights": np.zeros(0, dtype=np.int64)}
    runs = min(points, n)
    ends = np.unique(-(-np.arange(1, runs + 1, dtype=np.int64) * n // runs))  # ceil(j n / runs): the last is n
    mean = float(v.mean())
    return {"count": n, "nulls": int(nulls.sum()), "min": float(v[0]), "max": float(v[-1]), "mean": mean,
            "m2": float(np.square(v - mean).sum()), "mods": [float(np.mod(v, float(s)).max()) for s in steps],
            "points": v[ends - 1], "weights": np.diff(ends, prepend=0)}


def merge_summaries(parts: list[dict], probs: list[float]) -> dict:
    """``partition_summary`` results of one column -> min, max, mean, std (population), nulls,
    q (at each of ``probs``, the first represented value whose estimated count of values at or
    below it reaches ``p`` of the values; 0 and 1 the exact min and max) and mods (the largest
    of each remainder). A partition's count at or below a value is exact at its run ends and
    estimated half-way inside a run, so it is off by at most half a run."""
    nulls = sum(p["nulls"] for p in parts)
    parts = [p for p in parts if p["count"]]
    n = sum(p["count"] for p in parts)
    if n == 0:
        return {"min": None, "max": None, "mean": None, "std": None, "nulls": nulls, "q": None, "mods": []}
    lo, hi = min(p["min"] for p in parts), max(p["max"] for p in parts)
    mean = sum(p["mean"] * p["count"] for p in parts) / n
    m2 = sum(p["m2"] + p["count"] * (p["mean"] - mean) ** 2 for p in parts)  # Chan et al.'s parallel variance
    values = np.unique(np.concatenate([np.asarray(p["points"], dtype=np.float64) for p in parts]))
    below = np.zeros(len(values))  # estimated count of values <= each candidate
    for p in parts:
        points, weights = np.asarray(p["points"], dtype=np.float64), np.asarray(p["weights"], dtype=np.int64)
        cum = np.concatenate([[0], np.cumsum(weights)])
        runs = np.searchsorted(points, values, side="right")  # runs wholly at or below the candidate
        inside = np.where(runs < len(points), weights[np.minimum(runs, len(points) - 1)] / 2.0, 0.0)
        below += cum[runs] + np.where(values < p["min"], 0.0, inside)
    at = np.searchsorted(below, np.asarray(probs, dtype=np.float64) * n, side="left").clip(0, len(values) - 1)
    q = values[at]
    q[np.asarray(probs) <= 0.0], q[np.asarray(probs) >= 1.0] = lo, hi
    mods = [max(m) for m in zip(*[p["mods"] for p in parts])]
    return {"min": lo, "max": hi, "mean": mean, "std": float(np.sqrt(max(m2, 0.0) / n)), "nulls": nulls,
            "q": np.clip(q, lo, hi).tolist(), "mods": mods}


def _value_expr(c):
    """A column as the fitting compares it: numeric kinds as ``_numeric_expr``, others as they are."""
    from pyspark.sql import functions as F

    return _numeric_expr(c) if c.kind in _NUMERIC_KINDS else F.col(f"`{c.name}`")


def category_counts(df, names: list[str], limit: int) -> dict[str, list[tuple]]:
    """Each column's (value, count) pairs, at most ``limit`` per column: the most frequent, ties
    broken by the value as a string (null first), the values in their types. One Spark aggregate
    over grouping sets (a set per column) for the columns ``PartitionSummaries`` leaves to Spark:
    those with more distinct values in some partition than it sends to the driver."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not names:
        return {}
    cols = [F.col(f"`{n}`") for n in names]
    counts = df.groupingSets([[c] for c in cols], *cols) \
        .agg(F.count(F.lit(1)).alias("__count"), *[F.grouping(c).alias(f"__g{i}") for i, c in enumerate(cols)])
    which = F.coalesce(*[F.when(F.col(f"__g{i}") == 0, F.lit(i)) for i in range(len(cols))])
    as_text = F.coalesce(*[F.when(F.col("__k") == i, F.col(f"`{n}`").cast("string")) for i, n in enumerate(names)])
    rank = F.row_number().over(Window.partitionBy("__k").orderBy(F.desc("__count"), F.asc_nulls_first("__text")))
    rows = counts.withColumn("__k", which).withColumn("__text", as_text).withColumn("__rank", rank) \
        .where(F.col("__rank") <= limit).select("__k", "__count", *cols).collect()
    out: dict[str, list[tuple]] = {n: [] for n in names}
    for r in rows:
        out[names[r["__k"]]].append((r[2 + r["__k"]], r["__count"]))
    return out


def _unmodelled_aggs(c) -> list:
    """What ``_fit_unmodelled`` reads of an identifier or constant column, as aggregates that join
    the one aggregate of ``fit_spec`` (aggregates skip nulls: they read the non-null values)."""
    from pyspark.sql import functions as F

    col = F.col(f"`{c.name}`")
    if c.kind == "constant":
        return [F.first(col, ignorenulls=True).alias(f"{c.name}__value")]
    if c.dtype == "int" or decimal_of(c.dtype):
        return [F.max(col).alias(f"{c.name}__idmax")]
    s = col.cast("string")
    prefix, digits = F.regexp_extract(s, ID_PATTERN, 1), F.regexp_extract(s, ID_PATTERN, 2)
    return [F.max(F.length(s)).alias(f"{c.name}__width"), F.count(s).alias(f"{c.name}__n"),
            F.sum((digits == "").cast("long")).alias(f"{c.name}__no_digits"),
            F.min(prefix).alias(f"{c.name}__prefix_min"), F.max(prefix).alias(f"{c.name}__prefix_max"),
            F.min(F.when(digits != "", F.length(digits))).alias(f"{c.name}__min_len"),
            F.max(F.length(digits)).alias(f"{c.name}__max_len"),
            F.sum(((F.length(digits) > 1) & digits.startswith("0")).cast("long")).alias(f"{c.name}__leading_zeros"),
            F.max(F.when((F.length(digits) > 0) & (F.length(digits) <= 38), digits.cast("decimal(38,0)")))
            .alias(f"{c.name}__max_number")]


def _fit_unmodelled(c, stats: dict) -> dict:
    """Identifiers: what new ids look like (integers: above the largest id; strings: the format
    ``string_id_format`` learns, else ``syn``-prefixed with the usual width). Constants: the value.
    ``stats``: ``_unmodelled_aggs``' values."""
    if c.kind == "constant":
        value = stats[f"{c.name}__value"]
        if base_dtype(c.dtype) == "timestamp_ltz" and value is not None:  # PySpark gives an instant as local time
            import datetime

            value = value.astimezone(datetime.timezone.utc).isoformat()
        elif base_dtype(c.dtype) in ("date", "timestamp") and value is not None:
            value = value.isoformat()
        elif decimal_of(c.dtype) and value is not None:
            value = str(value)  # exact, as JSON
        return {"name": c.name, "kind": "constant", "dtype": c.dtype, "value": value}
    if c.dtype == "int" or decimal_of(c.dtype):  # numbers: above the largest (a decimal's whole part)
        return {"name": c.name, "kind": "identifier", "dtype": c.dtype, "max": int(stats[f"{c.name}__idmax"] or 0)}
    agg = {k: stats[f"{c.name}__{k}"] for k in ("n", "no_digits", "prefix_min", "prefix_max", "min_len", "max_len",
                                                "leading_zeros", "max_number")}
    entry = {"name": c.name, "kind": "identifier", "dtype": c.dtype, "width": int(stats[f"{c.name}__width"] or 8)}
    fmt = string_id_format(agg)
    return {**entry, "format": fmt} if fmt else entry


# A string id's learned format: a prefix (anything, possibly empty) then a run of digits.
ID_PATTERN = r"^(.*?)([0-9]+)$"


def string_id_format(agg: dict) -> dict | None:
    """The format of a string identifier column from its aggregates over the non-null values
    (``n``; ``no_digits``: values not ending in digits; ``prefix_min``/``prefix_max`` of the part
    before the final digits; ``min_len``/``max_len`` of the digits; ``leading_zeros``: digit runs
    longer than one starting with 0; ``max_number``: the largest digit run as a number).

    Every value is one common prefix and digits: ``{"prefix", "digits", "max"}`` with ``digits``
    the zero-padded width when every digit run has the same length (``CUST-000123``,
    ``00042``), else 0 (unpadded: ``INV-7``, ``INV-1234``). Anything else (no common prefix,
    values not ending in digits, mixed widths with leading zeros, over 38 digits): None, and
    ids fall back to ``syn``-prefixed numbers."""
    if not agg["n"] or agg["no_digits"] or agg["prefix_min"] != agg["prefix_max"] or agg["max_number"] is None \
            or agg["max_len"] > 38:
        return None
    fixed = agg["min_len"] == agg["max_len"]
    if not fixed and agg["leading_zeros"]:  # 007 beside 12345: no one format writes both
        return None
    return {"prefix": agg["prefix_min"], "digits": int(agg["max_len"]) if fixed else 0, "max": int(agg["max_number"])}

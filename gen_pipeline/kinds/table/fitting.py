"""Fitting a table's encodings from Spark aggregates: nothing but small summaries reaches the
driver (quantiles, moments, category counts), plus a bounded seeded sample for the VGM
mixtures. The result is the versioned spec ``transforms.TableTransformer`` reads."""

from __future__ import annotations

import numpy as np

from gen_pipeline.errors import PipelineError
from gen_pipeline.kinds.table.schema import TableSchema, base_dtype, decimal_of
from gen_pipeline.kinds.table.transforms import (MAX_CATEGORIES, MAX_RARE_VALUES, OTHER, SPEC_VERSION, VGM_MAX_MODES,
                                                 VGM_MAX_POINTS, VGM_MIN_WEIGHT, VGM_POINT_SHARE, VGM_SAMPLE_ROWS,
                                                 _NUMERIC_KINDS, _TIME_STEPS)


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
    distinct, counts = np.unique(x, return_counts=True)
    if len(distinct) <= discrete_values and np.all(distinct == np.round(distinct)):
        return {"means": distinct.tolist(), "stds": [0.0] * len(distinct), "weights": (counts / len(x)).tolist()}
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
             max_categories: int = MAX_CATEGORIES, discrete_values: int = 0) -> dict:
    """Fit every column's encoding from aggregates of a Spark DataFrame of typed rows.

    Only summaries reach the driver, plus (for ``vgm``) a seeded sample of about
    ``sample_rows`` rows of the continuous columns to fit the mixtures on.
    """
    from pyspark.sql import functions as F

    cont = [c for c in schema.model_columns if c.kind in _NUMERIC_KINDS]
    for c in schema.columns:
        if c.kind == "text":
            import sys

            print(f"[preprocess] warning: column {c.name} is free text: left out of the model and of generated rows",
                  file=sys.stderr, flush=True)
    probs = np.linspace(0.0, 1.0, num_quantiles + 1).tolist()
    aggs = [F.count(F.lit(1)).alias("__n")]
    for c in cont:
        col = _numeric_expr(c)
        aggs += [
            F.min(col).alias(f"{c.name}__min"),
            F.max(col).alias(f"{c.name}__max"),
            F.avg(col).alias(f"{c.name}__mean"),
            F.stddev_pop(col).alias(f"{c.name}__std"),
            F.sum(col.isNull().cast("long")).alias(f"{c.name}__nulls"),
            F.percentile_approx(col, probs, 10_000).alias(f"{c.name}__q"),
        ]
        if c.kind == "datetime":  # the coarsest unit every value is a whole number of (s, ms or us)
            aggs += [F.max(F.pmod(col, F.lit(float(step)))).alias(f"{c.name}__mod{step}") for step in _TIME_STEPS]
    stats = df.agg(*aggs).first().asDict()
    n_rows = int(stats["__n"])
    if n_rows == 0:
        raise PipelineError("no usable rows to fit the transforms on (every row was quarantined?)")

    sample = None
    if method == "vgm" and cont:
        fraction = min(1.0, sample_rows / n_rows)
        sample = df.select(*[_numeric_expr(c).alias(c.name) for c in cont]).sample(False, fraction, seed=0).toPandas()

    columns = []
    for c in schema.model_columns:
        if c.kind in ("identifier", "constant"):
            columns.append(_fit_unmodelled(df, c))
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
            }
            if c.kind == "datetime":
                entry["step"] = next((s for s in _TIME_STEPS if not stats[f"{c.name}__mod{s}"]), 1)
            if method == "quantile":
                entry["quantiles"] = [float(v) for v in stats[f"{c.name}__q"]]
                entry["probs"] = probs
            elif method == "vgm":
                entry.update(fit_vgm(sample[c.name].to_numpy(), point_share=point_share,
                                     discrete_values=discrete_values))
            columns.append(entry)
        else:
            # One row per category, the most frequent first, at most max_categories + MAX_RARE_VALUES.
            counts = df.groupBy(c.name).count().orderBy(F.desc("count"), F.col(c.name).cast("string")) \
                .limit(max_categories + MAX_RARE_VALUES).collect()
            ordered = sorted(counts, key=lambda r: (-r["count"], "" if r[c.name] is None else str(r[c.name])))
            entry = {
                "name": c.name, "kind": c.kind, "dtype": c.dtype,
                "categories": [r[c.name] for r in ordered],  # None is the missing category
                "frequencies": [r["count"] / n_rows for r in ordered],
            }
            if len(ordered) > max_categories:
                entry = _cap_categories(entry, max_categories)
            columns.append(entry)
    return {"version": SPEC_VERSION, "schema": schema.to_dict(), "columns": columns, "fitted_rows": n_rows}


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


def _fit_unmodelled(df, c) -> dict:
    """Identifiers: what new ids look like (integers: above the largest id; strings: the format
    ``string_id_format`` learns, else ``syn``-prefixed with the usual width). Constants: the value."""
    from pyspark.sql import functions as F

    if c.kind == "constant":
        row = df.where(F.col(f"`{c.name}`").isNotNull()).select(f"`{c.name}`").limit(1).collect()
        value = row[0][0] if row else None
        if base_dtype(c.dtype) == "timestamp_ltz" and value is not None:  # PySpark gives an instant as local time
            import datetime

            value = value.astimezone(datetime.timezone.utc).isoformat()
        elif base_dtype(c.dtype) in ("date", "timestamp") and value is not None:
            value = value.isoformat()
        elif decimal_of(c.dtype) and value is not None:
            value = str(value)  # exact, as JSON
        return {"name": c.name, "kind": "constant", "dtype": c.dtype, "value": value}
    if c.dtype == "int":
        r = df.agg(F.max(f"`{c.name}`").alias("max")).first()
        return {"name": c.name, "kind": "identifier", "dtype": "int", "max": int(r["max"] or 0)}
    s = F.col(f"`{c.name}`").cast("string")
    prefix, digits = F.regexp_extract(s, ID_PATTERN, 1), F.regexp_extract(s, ID_PATTERN, 2)
    r = df.where(s.isNotNull()).agg(
        F.max(F.length(s)).alias("width"), F.count(F.lit(1)).alias("n"),
        F.sum((digits == "").cast("long")).alias("no_digits"),
        F.min(prefix).alias("prefix_min"), F.max(prefix).alias("prefix_max"),
        F.min(F.when(digits != "", F.length(digits))).alias("min_len"), F.max(F.length(digits)).alias("max_len"),
        F.sum(((F.length(digits) > 1) & digits.startswith("0")).cast("long")).alias("leading_zeros"),
        F.max(F.when((F.length(digits) > 0) & (F.length(digits) <= 38), digits.cast("decimal(38,0)")))
        .alias("max_number")).first().asDict()
    entry = {"name": c.name, "kind": "identifier", "dtype": c.dtype, "width": int(r["width"] or 8)}
    fmt = string_id_format(r)
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

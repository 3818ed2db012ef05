import numpy as np
import pandas as pd
import pytest

from gen_pipeline.errors import PipelineError
from gen_pipeline.kinds.table.schema import Column, TableSchema
from gen_pipeline.kinds.table.fitting import fit_vgm
from gen_pipeline.kinds.table.transforms import TableTransformer, _quantile_forward

SCHEMA = TableSchema(columns=(Column("gain", "continuous", "int"), Column("hours", "continuous", "float"),
                              Column("job", "categorical", "string")))


def _spec(values: dict[str, np.ndarray], probs=np.linspace(0, 1, 51), method: str = "quantile"):
    cols = []
    for c in SCHEMA.columns:
        v = values[c.name]
        if c.kind == "continuous":
            x = v[~np.isnan(v)]
            cols.append({"name": c.name, "kind": c.kind, "dtype": c.dtype, "method": method,
                         "min": float(x.min()), "max": float(x.max()), "mean": float(x.mean()),
                         "std": float(x.std()) or 1.0, "has_nulls": bool(np.isnan(v).any()),
                         "quantiles": np.quantile(x, probs).tolist(), "probs": probs.tolist()})
            if method == "vgm":
                cols[-1].update(fit_vgm(v))
        else:
            cats = pd.Series(v).value_counts(dropna=False)
            cols.append({"name": c.name, "kind": c.kind, "dtype": c.dtype,
                         "categories": [None if pd.isna(k) else k for k in cats.index],
                         "frequencies": (cats / cats.sum()).tolist()})
    return {"version": 1, "schema": SCHEMA.to_dict(), "columns": cols, "fitted_rows": len(v)}


@pytest.fixture()
def frame():
    rng = np.random.default_rng(0)
    n = 2000
    gain = np.where(rng.random(n) < 0.9, 0, rng.integers(100, 20000, n)).astype(float)  # a zero spike
    hours = rng.normal(40, 10, n)
    hours[:50] = np.nan
    job = rng.choice(["a", "b", "c", None], n, p=[0.5, 0.3, 0.15, 0.05])
    return pd.DataFrame({"gain": pd.array(gain.astype(int), dtype="Int64"), "hours": hours, "job": job}), \
        {"gain": gain, "hours": hours, "job": job}


@pytest.mark.parametrize("method", ["quantile", "vgm"])
def test_round_trip_keeps_categories_ints_and_nulls(frame, method):
    df, values = frame
    t = TableTransformer(_spec(values, method=method))
    x, reasons = t.transform(df)
    assert x.dtype == np.float32 and x.shape == (len(df), t.output_dim) and all(r is None for r in reasons)
    back = t.inverse_transform(x)
    assert list(back.columns) == ["gain", "hours", "job"]
    assert (back["job"].fillna("<na>") == df["job"].fillna("<na>")).all()
    assert back["hours"].isna().sum() == 50
    # ints round-trip exactly at the zero spike and within rounding elsewhere
    assert (back["gain"][df["gain"] == 0] == 0).all()
    assert np.abs(back["gain"].astype(float) - df["gain"].astype(float)).max() <= 1.0
    ok = ~np.isnan(values["hours"])
    assert np.allclose(back["hours"][ok], values["hours"][ok], atol=1e-3)  # float32 encoding


@pytest.mark.parametrize("method", ["quantile", "vgm"])
def test_decoded_values_stay_in_training_range(frame, method):
    df, values = frame
    t = TableTransformer(_spec(values, method=method))
    wild = np.random.default_rng(1).normal(0, 10, (500, t.output_dim)).astype(np.float32)
    out = t.inverse_transform(wild)
    assert out["gain"].min() >= 0 and out["gain"].max() <= values["gain"].max()
    assert set(out["job"].dropna()) <= {"a", "b", "c"}


def test_unseen_category_is_a_reason_or_an_error(frame):
    df, values = frame
    t = TableTransformer(_spec(values))
    drift = df.head(3).copy()
    drift.loc[1, "job"] = "astronaut"
    _, reasons = t.transform(drift, strict=False)
    assert reasons[0] is None and "column job: unseen category 'astronaut'" in reasons[1]
    with pytest.raises(PipelineError, match="unseen category"):
        t.transform(drift, strict=True)


def test_missing_column_and_unsupported_version(frame):
    df, values = frame
    spec = _spec(values)
    with pytest.raises(PipelineError, match="no column 'job'"):
        TableTransformer(spec).transform(df.drop(columns=["job"]))
    with pytest.raises(PipelineError, match="version 99 is not supported"):
        TableTransformer({**spec, "version": 99})


def test_quantile_forward_maps_ties_to_their_middle():
    q = np.array([0.0, 0.0, 0.0, 10.0, 20.0])
    p = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    u = _quantile_forward(np.array([0.0, 5.0, 20.0, 30.0, -1.0]), q, p)
    assert u.tolist() == pytest.approx([0.25, 0.625, 1.0, 1.0, 0.0])
    top = np.array([0.0, 10.0, 20.0, 20.0, 20.0])  # a point mass at the maximum; beyond it: the top
    u = _quantile_forward(np.array([20.0, 25.0, 15.0, -3.0]), top, p)
    assert u.tolist() == pytest.approx([0.75, 1.0, 0.375, 0.0])


def test_vgm_finds_the_modes_and_encodes_mode_plus_offset():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.zeros(3000), rng.normal(100, 5, 1500), rng.normal(1000, 50, 500)])
    fitted = fit_vgm(x)
    means = sorted(fitted["means"])
    # the zero spike and both bumps each get a live mode; surplus components are switched off
    assert len(means) <= 5 and min(abs(m) for m in means) < 1
    assert any(abs(m - 100) < 5 for m in means) and any(abs(m - 1000) < 50 for m in means)
    col = {"method": "vgm", "dtype": "float", "min": float(x.min()), "max": float(x.max()), **fitted}
    enc = TableTransformer._encode_continuous(col, x)
    assert enc.shape == (len(x), 1 + len(means)) and np.all(np.abs(enc[:, 0]) < 1)
    assert np.allclose(enc[:, 1:].sum(1), 1.0)  # exactly one mode per value
    back = TableTransformer._decode_continuous(col, enc)
    assert np.abs(back - x).max() < 1e-6 * max(1.0, np.abs(x).max()) * 10


def test_vgm_point_masses_decode_to_exactly_their_value():
    rng = np.random.default_rng(0)
    # Adult's capital_gain in miniature: 92% zeros, a spike at 7688, a spread-out tail
    x = np.concatenate([np.zeros(9200), np.full(300, 7688.0), rng.integers(100, 20000, 500).astype(float)])
    fitted = fit_vgm(x)
    stds = np.asarray(fitted["stds"])
    points = {m for m, s in zip(fitted["means"], stds) if s == 0}
    assert points == {0.0}  # 7688 holds 3% (< 5%): part of the Gaussian modes
    assert {m for m, s in zip(fit_vgm(x, point_share=0.02)["means"], fit_vgm(x, point_share=0.02)["stds"])
            if s == 0} == {0.0, 7688.0}
    assert abs(sum(fitted["weights"]) - 1) < 1e-9 and (stds[stds > 0] > 1).all()
    col = {"method": "vgm", "dtype": "int", "min": 0.0, "max": 20000.0, **fitted}
    enc = TableTransformer._encode_continuous(col, x)
    zero_mode = 1 + fitted["means"].index(0.0)
    assert (enc[:9200, zero_mode] == 1).all() and (enc[:9200, 0] == 0).all()
    assert enc[9200:, zero_mode].sum() == 0  # no other value takes the point's mode
    # Whatever offset a model emits for a point mode (TVAE adds output noise), the value is exact.
    noisy = enc.copy()
    noisy[:, 0] += rng.normal(0, 0.3, len(x))
    back = TableTransformer._decode_continuous(col, noisy)
    assert (back[:9200] == 0).all()
    assert np.abs(TableTransformer._decode_continuous(col, enc) - x).max() <= 1.0  # ints: rounding only
    # A column of a few values only: every mode a point, an unseen value goes to the nearest one.
    few = {"method": "vgm", "dtype": "float", "min": 1.0, "max": 3.0, **fit_vgm(np.repeat([1.0, 2.0, 3.0], 100))}
    assert sorted(few["means"]) == [1.0, 2.0, 3.0] and set(few["stds"]) == {0.0}
    e = TableTransformer._encode_continuous(few, np.array([2.0, 2.9]))
    assert TableTransformer._decode_continuous(few, e).tolist() == [2.0, 3.0]


def test_vgm_discrete_whole_numbers_are_one_point_mass_per_value():
    rng = np.random.default_rng(0)
    hours = rng.choice([20.0, 35.0, 40.0, 45.0, 60.0], p=[0.1, 0.1, 0.5, 0.2, 0.1], size=5000)
    fitted = fit_vgm(hours, discrete_values=128)
    assert fitted["means"] == [20.0, 35.0, 40.0, 45.0, 60.0] and set(fitted["stds"]) == {0.0}
    assert np.allclose(fitted["weights"], [np.mean(hours == v) for v in fitted["means"]])
    col = {"method": "vgm", "dtype": "int", "min": 20.0, "max": 60.0, **fitted}
    enc = TableTransformer._encode_continuous(col, hours)
    assert (TableTransformer._decode_continuous(col, enc) == hours).all()  # every spike exact
    ages = rng.integers(20, 70, 5000).astype(float)  # 50 values of 2% each: below the point share
    assert len(fit_vgm(ages, discrete_values=128)["means"]) == 50
    assert set(fit_vgm(ages + 0.5, discrete_values=128)["stds"]) != {0.0}  # not whole numbers: the mixture
    assert set(fit_vgm(ages, discrete_values=49)["stds"]) != {0.0}  # more values than allowed
    assert set(fit_vgm(ages)["stds"]) != {0.0}  # off by default


@pytest.mark.parametrize("method", ["quantile", "vgm"])
def test_calibration_maps_generated_values_onto_the_training_quantiles_keeping_their_order(frame, method):
    """A generator whose continuous output is too narrow and shifted (a VAE's prior samples, a
    GAN's collapsed modes) decodes, once calibrated on its own rows, to the training quantiles,
    with every row keeping its rank; nulls stay as drawn and the encoding is unchanged."""
    df, values = frame
    t = TableTransformer(_spec(values, method=method))
    x, _ = t.transform(df)
    start = next(sp.start for sp in t.spans if sp.kind == "continuous" and sp.start > 0)  # hours' value
    x[:, start] = 0.5 * x[:, start] + 0.2 if method == "quantile" else np.clip(0.4 * x[:, start] + 0.1, -1, 1)
    codes = np.stack([np.argmax(x[:, sp.start:sp.end], 1) for sp in t.spans if sp.kind == "categorical"], 1)
    before = t.inverse_to_arrow(x, codes).to_pandas()["hours"]
    calibrated = TableTransformer(t.calibrated(x, codes))
    after = calibrated.inverse_to_arrow(x, codes).to_pandas()["hours"]
    real = values["hours"][~np.isnan(values["hours"])]
    assert abs(before.std() - real.std()) > 0.2 * real.std()  # the distortion is visible ...
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):  # ... and gone once calibrated
        assert abs(after.quantile(q) - np.quantile(real, q)) < 0.05 * real.std()
    ok = before.notna()
    assert (after.isna() == before.isna()).all() and after[ok].rank().corr(before[ok].rank()) > 0.999
    assert np.array_equal(calibrated.transform(df)[0], t.transform(df)[0])


def test_calibration_matches_category_and_null_shares_drawn_from_logits(frame):
    """Logits that over-draw one category and the missing value: once calibrated, the drawn
    shares are the training frequencies (and the null share the spec records)."""
    import torch

    df, values = frame
    t = TableTransformer(_spec(values))
    job = next(sp for sp in t.spans if sp.kind == "categorical" and sp.cond)
    null = [sp for sp in t.spans if sp.kind == "categorical" and not sp.cond][0]  # hours' null indicator
    t.spec["columns"][1]["null_share"] = 0.025
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (20_000, t.output_dim)).astype(np.float32)
    x[:, job.start] += 2.0  # the most frequent category, far too often
    x[:, null.start + 1] += 1.5  # missing, far too often
    g = torch.Generator().manual_seed(0)
    codes = t.draw(torch.from_numpy(x), g).numpy()
    calibrated = TableTransformer(t.calibrated(x, codes, logits=True))
    after = calibrated.draw(torch.from_numpy(x), g).numpy()
    i_job, i_null = t.code_index[job.start], t.code_index[null.start]
    want = np.asarray(t.spec["columns"][2]["frequencies"])
    assert np.abs(np.bincount(codes[:, i_job], minlength=len(want)) / len(x) - want).max() > 0.1
    assert np.abs(np.bincount(after[:, i_job], minlength=len(want)) / len(x) - want).max() < 0.015
    assert (codes[:, i_null] == 1).mean() > 0.2 and abs((after[:, i_null] == 1).mean() - 0.025) < 0.006


def test_calibrate_agrees_with_the_quantile_forward_map_ties_included():
    """``_calibrate``'s one pass equals going through the generated values' probabilities
    (``_quantile_forward``, ties to their middle) and then the training quantiles."""
    from gen_pipeline.kinds.table.transforms import _calibrate

    rng = np.random.default_rng(3)
    probs = np.linspace(0, 1, 51)
    real = np.quantile(np.where(rng.random(5000) < 0.6, 0.0, rng.lognormal(8, 1, 5000)), probs)
    for gen in (rng.normal(5, 2, 5000), np.where(rng.random(5000) < 0.3, 2.0, rng.normal(5, 2, 5000))):
        knots = np.quantile(gen, probs)
        x = np.concatenate([rng.normal(5, 3, 2000), [2.0, knots[0] - 1, knots[-1] + 1, knots[7]]])
        want = np.interp(_quantile_forward(x, knots, probs), probs, real)
        assert np.allclose(_calibrate(x, knots.tolist(), probs.tolist(), real.tolist()), want)


def test_value_rules_fix_b_where_a_says_so_when_drawing_decoding_matching_and_calibrating():
    """A ``rules`` entry (``fitting.value_rules``): where ``rel`` is Husband or Wife, ``sex`` is
    Male or Female whatever the model drew, in drawn codes, in argmax decoding and in the rows a
    condition keeps; calibration matches ``sex``'s training share over all rows by fitting it on
    the rows the rule leaves free."""
    import torch

    from gen_pipeline.kinds.table.schema import Column, TableSchema
    from gen_pipeline.models.base import draw_categories

    schema = TableSchema(columns=(Column("rel", "categorical", "string"), Column("sex", "categorical", "string")))
    spec = {"version": 3, "schema": schema.to_dict(), "fitted_rows": 1000, "columns": [
        {"name": "rel", "kind": "categorical", "dtype": "string", "categories": ["Child", "Husband", "Wife"],
         "frequencies": [0.5, 0.4, 0.1]},
        {"name": "sex", "kind": "categorical", "dtype": "string", "categories": ["Male", "Female"],
         "frequencies": [0.6, 0.4], "rules": {"from": "rel", "when": ["Husband", "Wife"], "then": ["Male", "Female"]}}]}
    t = TableTransformer(spec)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(0, 1, (20_000, 5)).astype(np.float32))
    x[:, 4] += 1.0  # a model that says Female too often, husbands included
    g = torch.Generator().manual_seed(0)
    raw = draw_categories(x, t.spans, g)
    assert ((raw[:, 0] == 1) & (raw[:, 1] == 1)).float().mean() > 0.15  # female husbands, as drawn
    for codes in (t.draw(x, g).numpy(), None):
        out = t.inverse_to_arrow(x.numpy(), codes).to_pandas()
        assert (out.loc[out["rel"] == "Husband", "sex"] == "Male").all()
        assert (out.loc[out["rel"] == "Wife", "sex"] == "Female").all()
        assert set(out.loc[out["rel"] == "Child", "sex"]) == {"Male", "Female"}  # no rule: as the model drew
    female = t.matches(x, raw, {3: 1})  # sex (its span starts at 3) = Female
    assert not (raw[female, 0] == 1).any() and female.sum() < (raw[:, 1] == 1).sum()  # no husband kept as a woman
    assert ((raw[:, 0] == 1) & (raw[:, 1] == 1)).any()  # and the codes passed in are left as drawn
    codes = t.draw(x, g).numpy()
    calibrated = TableTransformer(t.calibrated(x.numpy(), codes, logits=True))
    after = calibrated.draw(x, g).numpy()
    assert abs((codes[:, 1] == 0).mean() - 0.6) > 0.1 and abs((after[:, 1] == 0).mean() - 0.6) < 0.02
    assert np.abs(np.bincount(after[:, 0], minlength=3) / len(after) - [0.5, 0.4, 0.1]).max() < 0.02

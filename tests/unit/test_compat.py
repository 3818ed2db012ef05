"""Models registered by the release before data kinds existed (``tests/data/legacy``: MLflow
model folders logged by that code, with rows it sampled) still load through
``gen_pipeline.registry.GenerativePyfunc`` and give the same rows, conditions and scores."""

import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import gen_pipeline.registry  # noqa: F401  (this checkout's package first, not the model's copy)

LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy"


def _load(name: str):
    import mlflow

    model = mlflow.pyfunc.load_model(str(LEGACY / name)).unwrap_python_model()
    assert Path(sys.modules["gen_pipeline"].__file__).parent == Path(gen_pipeline.registry.__file__).parent
    return model.bundle


def test_legacy_table_spec_has_no_kind_and_loads_as_a_table():
    bundle = _load("adult_tvae_tiny")
    assert "kind" not in bundle.spec and bundle.kind.name == "table"
    assert bundle.family.can_score and not bundle.family.conditional


def test_legacy_table_model_samples_the_same_rows():
    bundle = _load("adult_tvae_tiny")
    golden = pq.read_table(LEGACY / "adult_tvae_tiny_seed7.parquet")
    assert pa.concat_tables(list(bundle.sample_arrow(3000, 7))).equals(golden)
    female = pq.read_table(LEGACY / "adult_tvae_tiny_seed3_female.parquet")
    assert pa.concat_tables(list(bundle.sample_arrow(500, 3, conditions={"sex": "Female"}))).equals(female)


def test_legacy_table_model_scores_the_same():
    bundle = _load("adult_tvae_tiny")
    rows = pq.read_table(LEGACY / "adult_tvae_tiny_seed7.parquet").slice(0, 200).to_pandas(
        types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    scores, reasons = bundle.score(rows)
    assert all(r is None for r in reasons)
    golden = pq.read_table(LEGACY / "adult_tvae_tiny_scores.parquet").column("score").to_numpy()
    assert scores == pytest.approx(golden, rel=1e-5)


def test_legacy_image_model_samples_the_same_images():
    bundle = _load("digits_dcgan_tiny")
    assert bundle.kind.name == "image" and bundle.model.conditional
    golden = pq.read_table(LEGACY / "digits_dcgan_tiny_seed7.parquet")
    assert pa.concat_tables(list(bundle.sample_arrow(64, 7))).equals(golden)


def test_predict_generates_through_the_pyfunc():
    import mlflow

    model = mlflow.pyfunc.load_model(str(LEGACY / "adult_tvae_tiny"))
    out = model.predict(pd.DataFrame({"num_rows": [5], "seed": [7]}))
    assert len(out) == 5 and list(out.columns)[:3] == ["age", "workclass", "fnlwgt"]

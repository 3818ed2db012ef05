"""A model registered before data kinds existed (``tests/data/legacy``) evaluates, generates and
scores through today's stages, on the same Adult slice it was trained on."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.jobs, pytest.mark.slow]

LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy"


@pytest.fixture(scope="module")
def legacy_bundle():
    import mlflow

    import gen_pipeline.registry  # noqa: F401  (this checkout's package first)

    return mlflow.pyfunc.load_model(str(LEGACY / "adult_tvae_tiny")).unwrap_python_model().bundle


def test_legacy_model_evaluates_generates_and_scores(adult_work, spark, legacy_bundle, tmp_path):
    from gen_pipeline.config import load_config
    from gen_pipeline.layout import PreprocessOutput
    from gen_pipeline.stages.generate import run_generate
    from gen_pipeline.stages.score import run_score

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "adult_tvae_tiny.yaml")
    data = PreprocessOutput(adult_work / "runs" / "adult_tvae_tiny" / "preprocess")
    result = legacy_bundle.kind.evaluate(legacy_bundle, data, cfg.evaluate, legacy_bundle.family)
    assert 0.3 < result.metrics["quality_score"] <= 1 and result.metrics["test_neg_elbo_nats"] > 0

    out = tmp_path / "generated"
    lineage = run_generate(spark, legacy_bundle, rows=3000, seed=7, out=out, lineage={}, partition_rows=1000)
    assert lineage["rows"] == 3000 == pq.read_table(out).num_rows
    assert pq.read_table(out).column_names == [c.name for c in legacy_bundle.schema.model_columns]

    job = legacy_bundle.kind.score_records(spark, cfg, Path(data.manifest["inputs"][0]["path"]).parent.parent,
                                           [data.manifest["inputs"][-1]["path"]], legacy_bundle)
    scored = run_score(spark, legacy_bundle, job, out=tmp_path / "scored", lineage={})
    assert scored["rows_in"] == scored["rows_scored"] + scored["rows_rejected"] and scored["rows_scored"] > 10_000
    assert json.loads((tmp_path / "scored" / "_lineage.json").read_text())["rows_in"] == scored["rows_in"]

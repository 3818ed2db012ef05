"""A third data kind (1-D signals, ``gen_pipeline/kinds/signal``) through the same five stages,
and what ``run`` does when the gate refuses a model."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gen_pipeline.cli import main

pytestmark = [pytest.mark.jobs, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SIGNAL = str(REPO / "configs" / "signal_vae_tiny.yaml")


@pytest.fixture(scope="module")
def signal_work(spark, ray_cluster, tmp_path_factory):
    w = tmp_path_factory.mktemp("signal")
    for stage in ("preprocess", "train", "evaluate", "generate"):
        assert main([stage, "--config", SIGNAL, "--work-dir", str(w)]) == 0, stage
    return w


def test_a_new_kind_runs_through_the_same_stages(signal_work):
    import mlflow

    pre = signal_work / "runs" / "signal_vae_tiny" / "preprocess"
    manifest = json.loads((pre / "manifest.json").read_text())
    assert manifest["kind"] == "signal" and manifest["rows_in"] == 4000 == manifest["rows_written"]
    assert json.loads((pre / "transform_spec.json").read_text())["kind"] == "signal"
    out = signal_work / "outputs" / "signal_vae_tiny" / "generated"
    table = pq.read_table(out)
    assert table.num_rows == 4000 and table.column_names == ["signal"]
    assert {len(v) for v in table.column("signal").to_pylist()[:100]} == {32}
    client = mlflow.MlflowClient(f"sqlite:///{signal_work / 'mlflow.db'}")
    mv = client.get_model_version_by_alias("signal_vae_tiny", "champion")
    metrics = client.get_run(mv.run_id).data.metrics
    # the model keeps more of the signals' shape than positions drawn independently
    assert metrics["eval_autocorrelation_error"] < metrics["eval_baseline_marginals_autocorrelation_error"]
    assert mv.tags["gate_decision"] == "promoted"


def test_run_goes_on_with_the_champion_when_the_gate_refuses(signal_work, capsys):
    code = main(["run", "--config", SIGNAL, "--work-dir", str(signal_work), "--set", "evaluate.min_improvement=1000"])
    assert code == 0
    out = capsys.readouterr().out
    assert "[run] the gate refused version 2" in out and "with the champion, version 1" in out
    for what in ("generated", "scored"):
        lineage = json.loads((signal_work / "outputs" / "signal_vae_tiny" / what / "_lineage.json").read_text())
        assert str(lineage["model_version"]) == "1"
    assert lineage["rows_in"] == 4000 == lineage["rows_scored"]


def test_run_stops_with_an_error_when_nothing_was_ever_published(signal_work, capsys):
    code = main(["run", "--config", SIGNAL, "--work-dir", str(signal_work), "--set", "model_name=signal_unpublished",
                 "--set", "evaluate.min_quality_score=0.5"])  # a bound on a metric signals do not have
    assert code == 2
    err = capsys.readouterr().err
    assert "the gate refused signal_unpublished version 1 (quality_score was not measured" in err
    assert "no model was published" in err

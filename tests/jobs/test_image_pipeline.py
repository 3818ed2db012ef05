"""Images end to end through the CLI: scikit-learn's digits -> Spark preprocess -> Ray Train conv
VAE on digit 0 only (petastorm loader) -> evaluate (FID, ELBO, grids) -> Spark generate -> Spark
score of every digit with ROC-AUC (the other nine digits are the anomalies)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from gen_pipeline.cli import main

pytestmark = [pytest.mark.jobs, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "digits_cvae_tiny.yaml")


@pytest.fixture(scope="module")
def digits_work(spark, ray_cluster, tmp_path_factory):
    w = tmp_path_factory.mktemp("digits")
    assert main(["run", "--config", CONFIG, "--work-dir", str(w)]) == 0
    return w


def test_preprocess_keeps_every_digit_and_trains_on_zeros_only(digits_work):
    m = json.loads((digits_work / "runs/digits_cvae_tiny/preprocess/manifest.json").read_text())
    assert m["rows_in"] == 1797 and m["rows_quarantined"] == 0
    assert m["rows_in"] == m["rows_written"] + m["rows_excluded"]
    assert set(m["label_counts"]["train"]) == {"0"} and len(m["label_counts"]["test"]) == 10
    assert m["encoded_dim"] == 64 + 10


def test_training_logs_a_grid_per_epoch_and_evaluate_reports_fid_and_elbo(digits_work):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{digits_work / 'mlflow.db'}")
    mv = client.get_model_version_by_alias("digits_cvae_tiny", "champion")
    names = {a.path for a in client.list_artifacts(mv.run_id, "samples")}
    assert names == {"samples/epoch_001.png", "samples/epoch_002.png"}
    assert "evaluation/final_grid_per_class.png" in {a.path for a in client.list_artifacts(mv.run_id, "evaluation")}
    metrics = client.get_run(mv.run_id).data.metrics
    assert metrics["eval_fid"] > 0 and np.isfinite(metrics["eval_test_neg_elbo_nats"])
    assert metrics["eval_test_bits_per_dim"] == pytest.approx(metrics["eval_test_neg_elbo_nats"] / (64 * np.log(2)))
    assert len(client.get_metric_history(mv.run_id, "fid_2k")) == 2  # FID on rank 0 at every epoch


def test_generate_writes_uint8_images_lineage_and_a_preview(digits_work):
    from PIL import Image

    out = digits_work / "outputs/digits_cvae_tiny/generated"
    table = pq.read_table(out)
    assert table.num_rows == 5000 and table.column_names == ["image", "label"]
    assert {len(b) for b in table.column("image").to_pylist()[:500]} == {64}
    assert table.column("label").null_count == 5000  # an unconditional model: no condition
    lineage = json.loads((out / "_lineage.json").read_text())
    assert lineage["image"]["shape"] == [8, 8] and lineage["rows"] == 5000 and str(lineage["model_version"]) == "1"
    with Image.open(out / "_preview.png") as im:
        assert im.mode == "L" and im.size == (2 * (10 * 10 + 2), 2 * (10 * 10 + 2))


def test_score_writes_every_digit_with_its_negative_elbo_and_roc_auc(digits_work):
    out = digits_work / "outputs/digits_cvae_tiny/scored"
    df = pq.read_table(out).to_pandas()
    assert len(df) == 1797 and df["score"].notna().all() and df["reason"].isna().all()
    assert set(df["anomaly"]) == {0, 1} and (df["anomaly"] == (df["label"] != 0)).all()
    lineage = json.loads((out / "_lineage.json").read_text())
    assert lineage["rows_in"] == lineage["rows_scored"] + lineage["rows_rejected"] == 1797
    assert 0.0 <= lineage["roc_auc_anomaly"] <= 1.0 and lineage["normal_classes"] == [0]


def test_score_of_a_bad_npz_gives_reasons_not_a_crash(digits_work, tmp_path):
    x = np.zeros((3, 8, 8), np.uint8)
    np.savez(tmp_path / "few.npz", x=x, y=np.array([0, 1, 2]))
    np.savez(tmp_path / "big.npz", x=np.zeros((2, 9, 9), np.uint8))
    rc = main(["score", "--config", CONFIG, "--work-dir", str(digits_work), "--input", str(tmp_path / "big.npz"),
               "--out", str(tmp_path / "scored")])
    assert rc == 2 and not (tmp_path / "scored").exists()  # not one usable image: an error that says why
    from PIL import Image

    (tmp_path / "pngs" / "0").mkdir(parents=True)  # a folder with good and bad images: reasons, not a crash
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(tmp_path / "pngs" / "0" / "good.png")
    Image.fromarray(np.zeros((9, 9), np.uint8), "L").save(tmp_path / "pngs" / "0" / "big.png")
    rc = main(["score", "--config", CONFIG, "--work-dir", str(digits_work), "--input", str(tmp_path / "pngs"),
               "--out", str(tmp_path / "scored")])
    assert rc == 0
    df = pq.read_table(tmp_path / "scored").to_pandas().set_index("source")
    assert df.loc["0/big.png", "reason"] == "wrong size: 9x9, expected 8x8" and pd.isna(df.loc["0/big.png", "score"])
    assert np.isfinite(df.loc["0/good.png", "score"]) and df.loc["0/good.png", "reason"] is None


def test_the_registered_model_predicts_images_from_a_plain_python_shell(digits_work):
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{digits_work / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/digits_cvae_tiny@champion")
    out = model.predict(pd.DataFrame({"num_rows": [3], "seed": [7]}))
    assert len(out) == 3 and all(len(b) == 64 for b in out["image"])
    again = model.predict(pd.DataFrame({"num_rows": [3], "seed": [7]}))
    assert list(again["image"]) == list(out["image"])  # seeded

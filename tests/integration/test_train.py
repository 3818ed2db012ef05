"""Ray Train: DDP over 2 workers with each loader, checkpoints per epoch, a killed worker resumed."""

import mlflow
import pytest

from gen_pipeline.pipeline import preprocess_dir, stage_preprocess
from gen_pipeline.train import train_on_ray

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def prepared(spark, runtime, tiny_config):
    stage_preprocess(tiny_config, runtime)
    return preprocess_dir(tiny_config, runtime)


@pytest.mark.parametrize("loader,family", [("ray_data", "tvae"), ("petastorm", "gan")])
def test_ddp_training_with_each_loader_logs_every_epoch(ray_cluster, runtime, tiny_config, prepared, loader, family):
    cfg = tiny_config.model_copy(update={
        "train": tiny_config.train.model_copy(update={"loader": loader, "epochs": 2}),
        "model": tiny_config.model.model_copy(update={"family": family, "pac": 4})})
    runtime.mlflow("tests-train")
    with mlflow.start_run() as run:
        result = train_on_ray(cfg, runtime, prepared, mlflow_run_id=run.info.run_id, run_name=f"t-{loader}")
    assert len(result.history) == 2
    key = "loss" if family == "tvae" else "loss_d"
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, key)
    assert [m.step for m in history] == [1, 2]  # rank 0 logged each epoch to MLflow
    assert result.state_dict and all(v.isfinite().all() for v in result.state_dict.values() if v.is_floating_point())


def test_killed_worker_resumes_from_the_last_checkpoint(ray_cluster, runtime, tiny_config, prepared):
    cfg = tiny_config.model_copy(update={"train": tiny_config.train.model_copy(update={"epochs": 3})})
    result = train_on_ray(cfg, runtime, prepared, mlflow_run_id=None, run_name="t-fault", fail_at_epoch=2)
    assert len(result.history) == 3  # epoch 1 before the kill mid-epoch 2, then 2 and 3 after the resume
    assert result.resumed_from == [1]  # the restarted group loaded epoch 1's checkpoint, lost only epoch 2

"""Which Ray Train run a `train` call works on, and which checkpoint a restarted driver resumes."""

import pytest
import torch

from gen_pipeline.config import PipelineConfig
from gen_pipeline.errors import PipelineError
from gen_pipeline.training.checkpoints import CHECKPOINT_FILE, RunRecord, latest_checkpoint, plan_run


def _cfg(**train) -> PipelineConfig:
    return PipelineConfig.model_validate({"name": "t", "model_name": "t", "train": train})


def test_an_unfinished_run_is_picked_up_and_a_finished_one_never_is(tmp_path):
    first = plan_run(_cfg(), tmp_path, "fp1")
    assert first.name.startswith("t-") and first.name.endswith("-1")
    first.mlflow_run_id = "abc"
    first.save(tmp_path)
    again = plan_run(_cfg(), tmp_path, "fp1")  # the driver died: same run, same MLflow run
    assert (again.name, again.mlflow_run_id) == (first.name, "abc")
    again.model_version = "3"
    again.save(tmp_path)
    assert plan_run(_cfg(), tmp_path, "fp1").name == first.name[:-1] + "2"  # finished: a new run


def test_the_name_follows_training_config_and_data_only(tmp_path):
    base = plan_run(_cfg(), tmp_path, "fp1").name
    assert plan_run(_cfg(epochs=3), tmp_path, "fp1").name != base
    assert plan_run(_cfg(), tmp_path, "fp2").name != base  # other data
    other_gate = PipelineConfig.model_validate({"name": "t", "model_name": "t", "evaluate": {"seed": 9}})
    assert plan_run(other_gate, tmp_path, "fp1").name == base


def test_a_named_run_that_finished_is_refused(tmp_path):
    assert plan_run(_cfg(run_name="mine"), tmp_path, "fp").name == "mine"
    RunRecord("mine", "abc", "2").save(tmp_path)
    with pytest.raises(PipelineError, match="run_name=mine: that run already finished"):
        plan_run(_cfg(run_name="mine"), tmp_path, "fp")


def test_latest_checkpoint_skips_one_cut_short_by_the_kill(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for epoch in (1, 2):
        (tmp_path / f"checkpoint_{epoch}").mkdir()
        torch.save({"epoch": epoch}, tmp_path / f"checkpoint_{epoch}" / CHECKPOINT_FILE)
    (tmp_path / "checkpoint_3").mkdir()
    torch.save({"epoch": 3, "pad": torch.zeros(1000)}, tmp_path / "checkpoint_3" / CHECKPOINT_FILE)
    data = (tmp_path / "checkpoint_3" / CHECKPOINT_FILE).read_bytes()
    (tmp_path / "checkpoint_3" / CHECKPOINT_FILE).write_bytes(data[: len(data) // 2])  # a partial write
    assert latest_checkpoint(tmp_path) == (tmp_path / "checkpoint_2", 2)


def test_ray_data_caches_a_split_only_when_it_fits_the_object_store_share(tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gen_pipeline.training.driver import fits_object_store

    rows = pa.array(list(np.ones((1000, 25), np.float32)), pa.list_(pa.float32()))  # ~100 kB decoded
    pq.write_table(pa.table({"features": rows}), tmp_path / "part-00000.parquet")

    class Ray:  # the one call fits_object_store makes
        def __init__(self, store: int):
            self.store = store

        def cluster_resources(self):
            return {"object_store_memory": self.store}

    assert fits_object_store(tmp_path, Ray(10_000_000), 0.25)
    assert not fits_object_store(tmp_path, Ray(200_000), 0.25)  # 100 kB > a quarter of 200 kB
    assert not fits_object_store(tmp_path, Ray(10_000_000), 0.0)  # 0: always stream

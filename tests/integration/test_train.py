"""Ray Train: DDP over 2 workers with each loader, checkpoints per epoch, a killed worker resumed,
a killed driver's run picked up again by the next ``gen-pipeline train``."""

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from gen_pipeline.stages.preprocess import stage_preprocess
from gen_pipeline.layout import RunLayout
from gen_pipeline.training.driver import train_on_ray

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "adult_tvae_tiny.yaml")
EPOCH_LINE = re.compile(r"\[train\] epoch (\d+)/(\d+) ")


@pytest.fixture(scope="module")
def prepared(spark, runtime, tiny_config):
    stage_preprocess(tiny_config, runtime)
    return RunLayout(runtime.work_dir, tiny_config.name).preprocess


@pytest.mark.parametrize("loader,family,cache", [("ray_data", "tvae_ar", 0.25), ("ray_data", "gan", 0.0),
                                                 ("petastorm", "gan", 0.0)])
def test_ddp_training_with_each_loader_logs_every_epoch(ray_cluster, runtime, tiny_config, prepared, loader, family,
                                                        cache, capsys):
    cfg = tiny_config.model_copy(update={
        "train": tiny_config.train.model_copy(update={"loader": loader, "epochs": 2,
                                                      "ray_data_cache_fraction": cache}),
        "model": tiny_config.model.model_copy(update={"family": family, "pac": 4})})
    runtime.mlflow("tests-train")
    with mlflow.start_run() as run:
        result = train_on_ray(cfg, runtime, prepared, mlflow_run_id=run.info.run_id,
                              run_name=f"t-{loader}-{family}-{cache}",  # one run each: a name's finished run is reused
                              ray_storage=runtime.work_dir / "ray_results")
    assert len(result.history) == 2
    key = "loss" if family.startswith("tvae") else "loss_d"
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, key)
    assert [m.step for m in history] == [1, 2]  # rank 0 logged each epoch to MLflow
    assert result.state_dict and all(v.isfinite().all() for v in result.state_dict.values() if v.is_floating_point())
    if loader == "ray_data":  # cached when the split fits the object store's share, else streamed
        assert ("cached in the object store" if cache else "streamed from Parquet") in capsys.readouterr().out


def test_ray_data_windows_give_every_row_once_per_epoch_reshuffled(ray_cluster, prepared):
    import ray.data
    import torch

    from gen_pipeline.training.loaders import read_features, windowed_batches

    path = prepared / "encoded" / "train"
    expected = read_features(path)
    it = ray.data.read_parquet(str(path)).select_columns(["features"]).iterator()
    batches = windowed_batches(it, batch_size=64, seed=3, window=4)
    epochs = [list(batches(e)) for e in (0, 1)]
    assert all(len(b) == 64 for b in epochs[0][:-1]) and 0 < len(epochs[0][-1]) <= 64
    rows = [torch.cat(e) for e in epochs]
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(rows[0]) == key(expected) and key(rows[1]) == key(expected)  # each row once, none lost
    assert not torch.equal(rows[0], rows[1])  # next epoch: reshuffled
    assert not torch.equal(rows[0], expected)  # shuffled at all


def test_killed_worker_costs_only_the_epoch_in_progress(ray_cluster, runtime, tiny_config, prepared):
    # The memory loader's order is a function of (seed, epoch, rank) and fit reseeds every epoch,
    # so the run that lost a worker must retrace the unbroken run's numbers, not just come close.
    cfg = tiny_config.model_copy(update={"train": tiny_config.train.model_copy(update={"epochs": 4,
                                                                                      "loader": "memory"})})
    broken = train_on_ray(cfg, runtime, prepared, mlflow_run_id=None, run_name="t-fault",
                          ray_storage=runtime.work_dir / "ray_results", fail_at_epoch=2)
    assert len(broken.history) == 4  # epoch 1 before the kill mid-epoch 2, then 2..4 after the resume
    assert broken.resumed_from == [1]  # the restarted group loaded epoch 1's checkpoint, lost only epoch 2
    unbroken = train_on_ray(cfg, runtime, prepared, mlflow_run_id=None, run_name="t-unbroken",
                            ray_storage=runtime.work_dir / "ray_results")
    assert unbroken.resumed_from == []
    loss = [[h["loss"] for h in r.history] for r in (broken, unbroken)]
    assert loss[1][-1] < loss[1][0] - 10  # it learned, so agreeing below is not two flat lines agreeing
    assert loss[0] == pytest.approx(loss[1], rel=1e-4), loss


def _marked_pids(marker: str) -> list[int]:
    needle = f"GP_DRIVER_TEST={marker}".encode()
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if needle in (d / "environ").read_bytes().split(b"\0"):
                    found.append(int(d.name))
            except OSError:
                pass
    return found


def test_killed_driver_resumes_its_run_when_started_again(runtime, tiny_config, prepared, tmp_path):
    """SIGKILL the `gen-pipeline train` process (and everything in its process group: its
    embedded Ray) mid-training, start the same command again: it finds the run by its stable
    name, continues from the last checkpoint in the same MLflow run, and registers the model."""
    epochs = 6
    work = tmp_path / "w"
    shutil.copytree(prepared, work / "runs" / tiny_config.name / "preprocess")
    marker = secrets.token_hex(6)
    # Not the tracking URI this test session's MLflow exported: the CLI uses its work dir's own.
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "GP_DRIVER_TEST": marker}
    cmd = [sys.executable, "-m", "gen_pipeline.cli", "train", "--config", TINY, "--work-dir", str(work),
           "--set", f"train.epochs={epochs}"]
    try:
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 start_new_session=True)
        seen, deadline = [], time.monotonic() + 240
        for line in first.stdout:
            seen.append(line)
            m = EPOCH_LINE.search(line)
            if (m and int(m.group(1)) >= 2) or time.monotonic() > deadline:
                break
        os.killpg(first.pid, signal.SIGKILL)
        seen += first.stdout.readlines()
        first.wait()
        log1 = "".join(seen)
        done_before = [int(m.group(1)) for m in EPOCH_LINE.finditer(log1)]
        assert len(done_before) >= 2 and max(done_before) < epochs and "registered" not in log1, log1[-3000:]
        (record_file,) = (work / "runs" / tiny_config.name / "train").glob("*.json")
        record = json.loads(record_file.read_text())
        assert record["mlflow_run_id"] and record["model_version"] is None

        # (the workers' lines reach the driver's terminal through Ray's log forwarding, on stderr)
        again = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        assert again.returncode == 0, again.stdout[-3000:]
    finally:
        for pid in _marked_pids(marker):  # whatever of the killed driver's Ray outlived it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    out = json.loads([line for line in again.stdout.splitlines() if line.startswith("{")][-1])
    (resumed_at,) = out["resumed_from"]
    # Every epoch whose checkpoint was written before the kill is kept: at least the one before
    # the last epoch line we saw (its report returned before that epoch began).
    assert max(done_before) - 1 <= resumed_at < epochs, (done_before, out)
    after = [int(m.group(1)) for m in EPOCH_LINE.finditer(again.stdout)]
    assert after == list(range(resumed_at + 1, epochs + 1)), again.stdout[-3000:]  # none rerun
    assert out["epochs_trained"] == epochs and out["ray_run_name"] == record_file.stem
    assert out["run_id"] == record["mlflow_run_id"] and out["version"] == "1"  # the same MLflow run, continued
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    assert {m.step for m in client.get_metric_history(out["run_id"], "loss")} == set(range(1, epochs + 1))
    assert json.loads(record_file.read_text())["model_version"] == "1"  # finished: the next train starts anew

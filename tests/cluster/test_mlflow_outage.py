"""The MLflow server goes away in the middle of a training run and comes back (issue 8).

A real ``mlflow server`` (conftest ``mlflow_server``) is SIGKILLed while ``gen-pipeline train``
(its own process and embedded Ray) is in the middle of its epochs, and started again a few
seconds later on the same port and sqlite store. Training must not stop; the epochs whose
metrics could not be sent are logged from the checkpoint's history once the server answers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gen_pipeline.stages.preprocess import stage_preprocess
from gen_pipeline.runtime import Runtime

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "adult_tvae_tiny.yaml")
EPOCHS = 8


class _Lines:
    """Collects a process's output lines in a thread; ``wait_for`` blocks until one matches."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> bool:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(rx.search(line) for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    @property
    def text(self) -> str:
        self._thread.join(timeout=30)
        return "".join(self.lines)


def test_training_survives_an_mlflow_outage_and_every_epoch_reaches_the_server(
        spark, tiny_config, mlflow_server, tmp_path):
    work = tmp_path / "w"
    stage_preprocess(tiny_config, Runtime(work_dir=work))
    env = {**mlflow_server.env, "MLFLOW_TRACKING_URI": mlflow_server.uri}
    cmd = [sys.executable, "-m", "gen_pipeline.cli", "train", "--config", TINY, "--work-dir", str(work),
           "--set", f"train.epochs={EPOCHS}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = _Lines(proc)
    try:
        assert out.wait_for(r"\[train\] epoch 2/", 240), "".join(out.lines)[-3000:]
        mlflow_server.stop()  # the server and its worker, by process id
        t_down = time.monotonic()
        # Down until rank 0 has given up on at least one epoch's metrics (1 + 2 + 4 s of backoff).
        assert out.wait_for(r"could not log epoch \d+ metrics to MLflow", 120), "".join(out.lines)[-3000:]
        mlflow_server.start()  # same port, same sqlite store
        outage_s = time.monotonic() - t_down
        assert proc.wait(timeout=300) == 0, out.text[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    log = out.text
    result = json.loads([line for line in log.splitlines() if line.startswith("{")][-1])
    print(f"\n[outage] server down {outage_s:.1f}s; {len(re.findall('could not log epoch', log))} epoch(s) not "
          f"logged live")

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri, registry_uri=mlflow_server.uri)
    steps = [m.step for m in client.get_metric_history(result["run_id"], "loss")]
    assert sorted(steps) == list(range(1, EPOCHS + 1)), steps  # every epoch, each once, none lost
    missed = re.search(r"logged (\d+) epoch\(s\) MLflow had missed", log)
    assert missed and int(missed.group(1)) >= 1, log[-3000:]  # sent after the outage, from the checkpoint
    assert client.get_run(result["run_id"]).data.metrics["train_seconds"] > 0
    assert client.get_model_version_by_alias(tiny_config.model_name, "candidate").version == result["version"] == "1"
    # The checkpoints were kept through it all: the last N, the newest at the final epoch.
    run_dir = work / "ray_results" / result["ray_run_name"]
    kept = sorted(run_dir.glob("checkpoint_*/checkpoint.pt"))
    assert len(kept) == tiny_config.train.checkpoints_to_keep
    import torch

    assert max(torch.load(p, weights_only=True)["epoch"] for p in kept) == EPOCHS

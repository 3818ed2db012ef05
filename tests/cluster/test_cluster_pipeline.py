"""The whole pipeline against real servers on 127.0.0.1 (see conftest.py), each stage in its own
process so SPARK_MASTER / RAY_ADDRESS / MLFLOW_TRACKING_URI are read at process start, exactly as
the README's "From the embedded run to a cluster" section runs it:

    preprocess  gen-pipeline, SPARK_MASTER=spark://...        (Spark standalone master + worker)
    train       gen-pipeline, RAY_ADDRESS=127.0.0.1:GCS       (the library path: a driver here) -> v1
    train       ray job submit --address http://...:DASHBOARD (the job runs on the head)        -> v2
    evaluate    gen-pipeline, MLflow only                     (v2 @candidate -> @champion)
    generate    gen-pipeline, SPARK_MASTER                    (rows from @champion, over HTTP)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gen_pipeline.kinds.table.datasets import ADULT_SCHEMA
pytestmark = [pytest.mark.cluster, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CONFIG = "configs/adult_tvae_tiny.yaml"
MODEL = "adult_tvae_tiny"
FAST = ["--set", "train.epochs=1", "--set", "generate.rows=5000"]
ROWS = 5000
# Ray's own servers listen beyond loopback in this Ray version, whatever --node-ip-address says:
# GCS, raylets, core workers (every Ray worker and driver, on Ray's worker ports 10002-19999),
# the dashboard's and autoscaler's metrics, the Ray Client server (upstream: ray-project/ray#59852).
# Token auth guards Ray's RPC; keep Ray on a private network. Everything else started here
# (Spark master, worker, driver and executors; MLflow) must listen on loopback only.
RAY_WORKER_PORTS = range(10002, 20000)


def _rays_own(name: str, port: int) -> bool:
    return (name.startswith(("gcs_server", "raylet", "ray::")) or "/site-packages/ray/" in name
            or "ray.util.client.server" in name or (name.startswith("python") and port in RAY_WORKER_PORTS))


def _stage(name: str, cmd: list[str], env: dict, cwd: Path, timings: dict, timeout: int = 240) -> str:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    timings[name] = round(time.perf_counter() - t0, 1)
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _last_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


class _ListenerSampler:
    """Records, once a second, the listening sockets of every process carrying the marker."""

    def __init__(self, cluster):
        self.cluster, self.seen, self._stop = cluster, set(), threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self.seen |= self.cluster.listeners()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def run(local_servers, tmp_path_factory):
    """Run every stage once against the servers; returns what each printed plus timings."""
    s = local_servers
    work = tmp_path_factory.mktemp("cluster_work")
    # What `ray job submit` uploads: the entry points and configs only (the package itself is
    # installed on the cluster's nodes), far under Ray's 100 MiB working-dir limit.
    job_dir = tmp_path_factory.mktemp("job")
    for sub in ("jobs", "configs"):
        shutil.copytree(REPO / sub, job_dir / sub)
    common = ["--config", CONFIG, "--work-dir", str(work), *FAST]
    timings: dict[str, float] = {}
    out: dict[str, object] = {"work": work, "timings": timings}
    with _ListenerSampler(s) as sampler:
        out["preprocess"] = _last_json(_stage("preprocess", ["gen-pipeline", "preprocess", *common],
                                              s.client_env(SPARK_MASTER=s.spark_master), REPO, timings))
        out["train_library"] = _last_json(_stage("train (RAY_ADDRESS)", ["gen-pipeline", "train", *common],
                                                 s.client_env(RAY_ADDRESS=s.ray_gcs, MLFLOW_TRACKING_URI=s.mlflow),
                                                 REPO, timings))
        runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": s.mlflow}}
        out["train_job_log"] = _stage("train (ray job submit)", [
            str(VENV_BIN / "ray"), "job", "submit", "--address", s.ray_dashboard, "--working-dir", str(job_dir),
            "--runtime-env-json", json.dumps(runtime_env), "--", "python", "jobs/train.py", *common],
            s.client_env(), job_dir, timings)
        out["evaluate"] = _last_json(_stage("evaluate", ["gen-pipeline", "evaluate", *common],
                                            s.client_env(MLFLOW_TRACKING_URI=s.mlflow), REPO, timings))
        out["generate"] = _last_json(_stage("generate", ["gen-pipeline", "generate", *common],
                                            s.client_env(SPARK_MASTER=s.spark_master, MLFLOW_TRACKING_URI=s.mlflow),
                                            REPO, timings))
    out["listeners"] = sampler.seen
    print(f"\n[cluster] servers up in {s.startup_s}s; stage seconds: {timings}; "
          f"quality_score={out['evaluate']['quality_score']:.3f}")
    return out


def _client(s):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=s.mlflow, registry_uri=s.mlflow)


def test_model_is_registered_on_the_server_with_champion_set(local_servers, run):
    client = _client(local_servers)
    versions = {v.version: v for v in client.search_model_versions(f"name='{MODEL}'")}
    assert sorted(versions) == ["1", "2"]  # one per training path
    assert run["train_library"]["version"] == "1" and run["evaluate"]["version"] == "2"
    assert run["evaluate"]["promoted"], run["evaluate"]["reason"]
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == "2" == client.get_model_version_by_alias(MODEL, "candidate").version
    assert champion.tags["gate_decision"] == "promoted"
    # one epoch per run, logged by rank 0 of the Ray Train workers over HTTP
    for v in versions.values():
        assert [m.step for m in client.get_metric_history(v.run_id, "loss")] == [1]
    # artifacts went through the server (proxied) into its --artifacts-destination
    weights = list(local_servers.mlflow_artifacts.rglob("weights.pt"))
    assert len(weights) == 2, weights
    assert any(p.name == "marginals_real_vs_synthetic.png" for p in local_servers.mlflow_artifacts.rglob("*.png"))


def test_training_ran_on_the_ray_cluster_both_ways(local_servers, run):
    log = run["train_job_log"]
    assert "[train] epoch 1/1" in log and f"registered {MODEL} version 2" in log
    status, body = local_servers.get(f"{local_servers.ray_dashboard}/api/jobs/", local_servers.ray_auth)
    assert status == 200
    jobs = json.loads(body)
    submitted = [j for j in jobs if j["type"] == "SUBMISSION"]
    assert [j["status"] for j in submitted] == ["SUCCEEDED"]
    assert "jobs/train.py" in submitted[0]["entrypoint"]
    # the RAY_ADDRESS run connected a driver of its own to the cluster (not a local Ray)
    drivers = [j for j in jobs if j["type"] == "DRIVER" and "gen-pipeline train" in j["entrypoint"]]
    assert len(drivers) == 1 and drivers[0]["status"] == "SUCCEEDED", drivers


def test_ray_token_auth_is_enforced(local_servers, run):
    url = f"{local_servers.ray_dashboard}/api/jobs/"
    assert local_servers.get(url)[0] == 401
    assert local_servers.get(url, {"Authorization": "Bearer wrong"})[0] in (401, 403)


def test_spark_stages_ran_on_the_standalone_cluster(local_servers, run):
    state = json.loads(local_servers.get(f"{local_servers.spark_ui}/json/")[1])
    apps = state["completedapps"]
    assert len(apps) == 2, apps  # preprocess and generate, each its own application
    assert all(app["cores"] > 0 for app in apps)
    assert run["preprocess"]["rows_written"] > 0 and run["preprocess"]["rows_quarantined"] >= 0


def test_generated_rows_on_disk_in_the_original_schema(local_servers, run):
    out = Path(run["generate"]["generated"])
    assert out == run["work"] / "outputs" / MODEL / "generated"
    table = pq.read_table(out)
    assert table.num_rows == ROWS == run["generate"]["rows"]
    assert table.column_names == ADULT_SCHEMA.names and len(table.column_names) == 15
    assert (out / "_SUCCESS").exists()
    lineage = json.loads((out / "_lineage.json").read_text())
    assert lineage["model_name"] == MODEL and str(lineage["model_version"]) == "2"


def test_spark_and_mlflow_listen_on_loopback_only(local_servers, run):
    names = {name.split()[0] for name, _, _ in run["listeners"]}
    assert {"java", "gcs_server", "raylet"} <= names, names  # the sampler saw the servers
    exposed = sorted((ip, port, n) for n, ip, port in run["listeners"]
                     if ip != "127.0.0.1" and not _rays_own(n, port))
    assert not exposed, "\n".join(map(str, exposed))

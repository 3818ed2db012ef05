"""Nightly gen_pipeline on any table: preprocess -> train -> evaluate -> generate against existing clusters.

Each stage is one pod of the project image (infra/Dockerfile) running the project's own entry
point: Spark stages as a driver in client mode against ``SPARK_MASTER`` (a standalone Spark
cluster whose workers run the same image), training submitted to the Ray cluster with
``ray job submit`` (the RayJob in infra/k8s/ is the KubeRay alternative), MLflow over HTTP.
Every credential comes from a Kubernetes Secret (``mlflow-client``, ``ray-auth``), never this file.

The table is a parameter, never written here: by default the config file of the
``gen-pipeline-table`` ConfigMap (infra/k8s/table.yaml: data.source, name, target), mounted in
every pod as ``TABLE_CONFIG``; a run triggered with ``--conf '{"data": "s3a://bucket/t/",
"name": "t", "target": "y"}'`` (or another ``config`` path) runs on that table instead: ``data``
replaces data.source, ``name`` the run's and model's name, ``target`` evaluate.tstr_label (an
empty value keeps the config's; with no config, ``data`` alone is enough, as for
``gen-pipeline run --data``).

The commands are plain data at module top (``STAGES``), so tests check them without Airflow;
Airflow (with the cncf.kubernetes provider) is needed only to build the DAG itself.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# The gen-pipeline-table ConfigMap, mounted read-only into the pods' workdir (/opt/gen_pipeline): a
# relative path, so `ray job submit --working-dir .` carries the file to the Ray cluster too.
TABLE_CONFIG = "configs/table.yaml"
# The DAG's params (Airflow renders ``{{ params.X }}`` in each task's arguments); empty: not passed on.
PARAMS = {"config": TABLE_CONFIG, "data": "", "name": "", "target": ""}
IMAGE = "gen-pipeline:0.1.0"
NAMESPACE = "gen-pipeline"
# Not secrets: where the services live. `$(VAR)` is expanded by Kubernetes from the pod's env.
ENV = {
    "SPARK_MASTER": "spark://spark-master.gen-pipeline.svc:7077",
    "RAY_DASHBOARD_ADDRESS": "http://gen-pipeline-ray-head-svc.gen-pipeline.svc:8265",
    "RAY_AUTH_MODE": "token",
    "MLFLOW_TRACKING_URI": "http://mlflow.gen-pipeline.svc:5000",
    "GEN_PIPELINE_WORK_DIR": "/data/work",
}


def stage_commands(config: str = "{{ params.config }}", data: str = "{{ params.data }}",
                   name: str = "{{ params.name }}", target: str = "{{ params.target }}") -> dict[str, list[str]]:
    """The argv of each stage, in run order, built from jobs/*.py (the pod's workdir holds jobs/
    and configs/), every one on the same table (an empty value is ignored by the CLI)."""
    table = ["--config", config, "--data", data, "--name", name, "--target", target]
    return {
        "preprocess": ["python", "jobs/preprocess.py", *table],
        "train": ["ray", "job", "submit", "--address", "$(RAY_DASHBOARD_ADDRESS)", "--working-dir", ".", "--",
                  "python", "jobs/train.py", *table, "--set", "train.use_gpu=true"],
        "evaluate": ["python", "jobs/evaluate.py", *table],
        # one dated folder per run and table; the seed is the config's, so a rerun of a day is identical
        "generate": ["python", "jobs/generate.py", *table,
                     "--out", "/data/work/outputs/{{ params.name or 'table' }}/generated/{{ ds }}"],
    }


STAGES = stage_commands()

try:  # Airflow is not a dependency of gen_pipeline: without it this file only defines the commands.
    from airflow import DAG
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.cncf.kubernetes.secret import Secret
    from kubernetes.client import models as k8s
except ImportError:
    DAG = None

if DAG is not None:
    env_vars = [k8s.V1EnvVar(name=k, value=v) for k, v in ENV.items()] + [
        # executors on the Spark cluster connect back to this pod's address
        k8s.V1EnvVar(name="SPARK_DRIVER_HOST", value_from=k8s.V1EnvVarSource(
            field_ref=k8s.V1ObjectFieldSelector(field_path="status.podIP"))),
    ]
    secrets = [Secret("env", None, "mlflow-client"), Secret("env", None, "ray-auth")]  # all keys as env vars
    volumes = [k8s.V1Volume(name="work", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
        claim_name="gen-pipeline-work")),
        k8s.V1Volume(name="table", config_map=k8s.V1ConfigMapVolumeSource(name="gen-pipeline-table"))]
    mounts = [k8s.V1VolumeMount(name="work", mount_path="/data"),
              k8s.V1VolumeMount(name="table", mount_path=f"/opt/gen_pipeline/{TABLE_CONFIG}", sub_path="table.yaml",
                                read_only=True)]
    with DAG(
        dag_id="gen_pipeline",
        params=PARAMS,
        schedule="0 2 * * *",
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        default_args={"retries": 1, "retry_delay": timedelta(minutes=10)},
        tags=["gen_pipeline"],
    ) as dag:
        previous = None
        for stage, argv in STAGES.items():
            task = KubernetesPodOperator(
                task_id=stage, name=f"gen-pipeline-{stage}", namespace=NAMESPACE, image=IMAGE,
                cmds=argv[:1], arguments=argv[1:], env_vars=env_vars, secrets=secrets,
                volumes=volumes, volume_mounts=mounts,
                get_logs=True, on_finish_action="delete_pod",
            )
            if previous is not None:
                previous >> task
            previous = task

"""infra/ and the README's cluster section cannot rot silently: every gen_pipeline command in them
parses with the real CLI, names a real config and real config fields, and every jobs/*.py exists;
versions match pyproject's pins; no credential is written down; embedded defaults bind 127.0.0.1.
No engine starts here."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import tempfile
import types
from pathlib import Path

import pytest
import yaml

from gen_pipeline.cli import STAGES, _config, build_parser
from gen_pipeline.errors import PipelineError

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
IMAGE_ROOT = "/opt/gen_pipeline/"  # where infra/Dockerfile puts jobs/ and configs/ (its WORKDIR)
YAMLS = sorted((INFRA / "k8s").glob("*.yaml"))
TABLE_CONFIG = "configs/table.yaml"  # where every stage's pod mounts the table's config (infra/k8s/table.yaml)


def _pins() -> dict[str, str]:
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {re.split(r"[\[=<>]", d)[0]: d.split("==")[1] for d in deps if "==" in d}


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _kind(kind: str) -> list[dict]:
    return [d for p in YAMLS for d in _docs(p) if d["kind"] == kind]


# ---- the command checker -------------------------------------------------------------------
def _repo_path(arg: str) -> Path:
    arg = arg.removeprefix("local://")
    return REPO / (arg[len(IMAGE_ROOT):] if arg.startswith(IMAGE_ROOT) else arg)


def entry_commands(argv: list[str]) -> list[tuple[str, list[str], Path | None]]:
    """(stage, its arguments, the jobs/*.py file if any) for each gen_pipeline entry point in argv."""
    found = []
    for i, tok in enumerate(argv):
        if Path(tok).name == "gen-pipeline" and i + 1 < len(argv):
            found.append((argv[i + 1], argv[i + 2:], None))
        elif re.search(r"(^|/)jobs/\w+\.py$", tok):
            found.append((Path(tok).stem, argv[i + 1:], _repo_path(tok)))
    return found


def _table_config_file() -> Path:
    """The config of infra/k8s/table.yaml's ConfigMap, as the pods see it at configs/table.yaml."""
    (cm,) = [d for d in _kind("ConfigMap") if d["metadata"]["name"] == "gen-pipeline-table"]
    path = Path(tempfile.mkdtemp()) / "table.yaml"
    path.write_text(cm["data"]["table.yaml"])
    return path


def check_command(stage: str, args: list[str], job: Path | None, where: str):
    assert stage in STAGES, f"{where}: unknown stage {stage!r}"
    if job is not None:
        assert job.is_file() and job.parent == REPO / "jobs", f"{where}: {job} is not one of jobs/*.py"
    try:
        ns = build_parser().parse_args([stage, *args])
    except SystemExit:
        pytest.fail(f"{where}: the CLI rejects `{stage} {' '.join(args)}`")
    if ns.config:
        config = _repo_path(ns.config)
        if config == REPO / TABLE_CONFIG:  # the gen-pipeline-table ConfigMap, mounted there in every pod
            config = _table_config_file()
        else:
            assert config.is_file() and config.parent == REPO / "configs", f"{where}: {ns.config} is not in configs/"
        ns = argparse.Namespace(**{**vars(ns), "config": str(config)})
    cfg = _config(ns)  # every --set key a real field with a valid value; --data/--name/--target as the CLI reads them
    model = getattr(ns, "model", None)
    if model:
        assert re.fullmatch(rf"models:/{cfg.model_name}(@\w+|/\d+)", model), f"{where}: {model} vs {cfg.model_name}"
    return cfg


def _check_all(argv: list[str], where: str) -> list[str]:
    cmds = entry_commands(argv)
    for stage, args, job in cmds:
        check_command(stage, args, job, where)
    return [stage for stage, _, _ in cmds]


def _configs(argv: list[str], where: str) -> list:
    """The config each gen_pipeline command in argv runs with."""
    return [check_command(stage, args, job, where) for stage, args, job in entry_commands(argv)]


def test_the_checker_rejects_what_the_cli_would():
    good = ["python", "jobs/train.py", "--config", "configs/adult_tvae.yaml", "--set", "train.epochs=2"]
    assert _check_all(good, "good") == ["train"]
    bad = [
        ["python", "jobs/trian.py", "--config", "configs/adult_tvae.yaml"],  # no such job
        ["gen-pipeline", "train", "--config", "configs/adult_tvae.yaml", "--rows", "5"],  # no --rows for train
        ["gen-pipeline", "train", "--config", "configs/nope.yaml"],
        ["gen-pipeline", "train", "--config", "configs/adult_tvae.yaml", "--set", "train.epocs=2"],
        ["gen-pipeline", "generate", "--config", "configs/adult_tvae.yaml", "--model", "models:/adult_gan@champion"],
    ]
    for argv in bad:
        with pytest.raises((AssertionError, PipelineError, pytest.fail.Exception)):
            _check_all(argv, "bad")


# ---- each infra file -----------------------------------------------------------------------
def test_rayjob_trains_on_gpu_workers_with_real_commands_and_token_auth():
    (job,) = _kind("RayJob")
    spec = job["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["python", "jobs/train.py"] and _check_all(argv, "RayJob") == ["train"]
    assert "train.use_gpu=true" in argv
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == IMAGE_ROOT.rstrip("/")  # what the entrypoint's relative paths need
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == _pins()["ray"]
    assert cluster["authOptions"]["mode"] == "token"
    gpus = [c["resources"]["limits"].get("nvidia.com/gpu") for g in cluster["workerGroupSpecs"]
            for c in g["template"]["spec"]["containers"]]
    assert gpus and all(gpus)


def test_spark_applications_run_the_real_jobs():
    apps = {a["metadata"]["name"]: a["spec"] for a in _kind("SparkApplication")}
    assert set(apps) == {"gen-pipeline-preprocess", "gen-pipeline-generate", "gen-pipeline-score"}
    for name, spec in apps.items():
        argv = [spec["mainApplicationFile"], *spec.get("arguments", [])]
        assert _check_all(argv, name) == [name.removeprefix("gen-pipeline-")]
        assert spec["type"] == "Python" and spec["sparkVersion"] == _pins()["pyspark"]
        assert spec["mainApplicationFile"].startswith(f"local://{IMAGE_ROOT}jobs/")


def test_mlflow_server_has_postgres_s3_and_basic_auth_from_secrets():
    (deploy,) = [d for d in _kind("Deployment") if d["metadata"]["name"] == "mlflow"]
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    script = " ".join(container["args"])
    assert "mlflow server --app-name basic-auth" in script
    env = {e["name"]: e for e in container["env"]}
    for name in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_DATABASE_URI", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        assert "secretKeyRef" in env[name]["valueFrom"], name
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"].startswith("s3://")
    assert "NO_PERMISSIONS" in script
    (service,) = [s for s in _kind("Service") if s["metadata"]["name"] == "mlflow"]
    assert service["spec"]["type"] == "ClusterIP"


def _dag():
    spec = importlib.util.spec_from_file_location("gen_pipeline_dag", INFRA / "airflow" / "gen_pipeline_dag.py")
    dag = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dag)
    return dag


def _rendered(argv: list[str], params: dict) -> list[str]:
    """A task's arguments as Airflow renders them (Jinja, ``params`` and the run's date)."""
    import jinja2

    return [jinja2.Template(a).render(params=params, ds="2026-11-29") for a in argv]


def test_dag_runs_the_four_stages_in_order_without_airflow_installed():
    assert importlib.util.find_spec("airflow") is None  # Airflow must not become a dependency
    dag = _dag()
    assert dag.DAG is None and list(dag.STAGES) == ["preprocess", "train", "evaluate", "generate"]
    for stage, argv in dag.STAGES.items():
        assert _check_all(_rendered(argv, dag.PARAMS), f"DAG task {stage}") == [stage]
    assert dag.STAGES["train"][:3] == ["ray", "job", "submit"]
    assert all(v.startswith(("http://", "spark://", "/", "token")) for v in dag.ENV.values())


def test_dockerfile_copies_real_paths_and_pins_the_stack():
    lines = [ln.strip() for ln in (INFRA / "Dockerfile").read_text().splitlines()]
    text = "\n".join(lines)
    pins = _pins()
    for ln in lines:
        if ln.startswith("COPY") and "--from=" not in ln:
            for src in ln.split()[1:-1]:
                assert (REPO / src).exists(), f"Dockerfile: COPY {src} does not exist"
    assert f"ARG SPARK_VERSION={pins['pyspark']}" in lines
    assert f"torch=={pins['torch']}" in text and f"mlflow[auth]=={pins['mlflow']}" in text
    assert "ARG TORCH_VARIANT=cpu" in lines  # CPU by default, CUDA by build-arg
    assert f"WORKDIR {IMAGE_ROOT.rstrip('/')}" in lines
    assert "PYSPARK_PYTHON=/opt/venv/bin/python" in text


def test_the_table_is_a_parameter_never_adult():
    """Every stage of every infra file runs on the table its parameters name (the ConfigMap's config
    file, or a DAG run's data/name/target), and nothing in them is wired to a bundled dataset."""
    table = _configs(["gen-pipeline", "preprocess", "--config", TABLE_CONFIG], "ConfigMap")[0]
    assert table.data.source and table.evaluate.tstr_label and table.name != "adult_tvae"  # a user's table
    dag = _dag()
    commands = {f"DAG {k}": _rendered(v, dag.PARAMS) for k, v in dag.STAGES.items()}
    commands |= {a["metadata"]["name"]: [a["spec"]["mainApplicationFile"], *a["spec"].get("arguments", [])]
                 for a in _kind("SparkApplication")}
    commands["RayJob"] = shlex.split(_kind("RayJob")[0]["spec"]["entrypoint"])
    for where, argv in commands.items():
        assert not [a for a in argv if "adult" in a.lower() or "shuttle" in a.lower()], f"{where}: {argv}"
        for cfg in _configs(argv, where):
            assert (cfg.name, cfg.data.source, cfg.evaluate.tstr_label) == \
                (table.name, table.data.source, table.evaluate.tstr_label), where
    for path in [*YAMLS, INFRA / "airflow" / "gen_pipeline_dag.py"]:  # no dataset named anywhere, comments included
        assert not re.search(r"(?i)adult|shuttle|datasets/", path.read_text()), path
    # a DAG run triggered with another table (no config file) runs every stage on that table
    other = {"config": "", "data": "s3a://bucket/tables/orders/", "name": "orders", "target": "returned"}
    for stage, argv in dag.STAGES.items():
        (cfg,) = _configs(_rendered(argv, other), f"DAG {stage}")
        assert (cfg.name, cfg.model_name, cfg.data.source, cfg.evaluate.tstr_label) == \
            ("orders", "orders", other["data"], "returned"), stage
    generate = _rendered(dag.STAGES["generate"], other)
    assert generate[generate.index("--out") + 1] == "/data/work/outputs/orders/generated/2026-11-29"


# ---- the README's cluster section ----------------------------------------------------------
def _readme_cluster_lines() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## From the embedded run to a cluster", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    joined = "\n".join(blocks).replace("\\\n", " ")
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_readme_keeps_its_two_commands_first_and_its_cluster_commands_are_real():
    blocks = re.findall(r"```\w*\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert [b.strip() for b in blocks[:2]] == ["make demo", "make test"]
    stages = []
    for line in _readme_cluster_lines():
        stages += _check_all(shlex.split(line), f"README: {line}")
    assert {"preprocess", "train", "evaluate", "generate"} <= set(stages)
    for line in _readme_cluster_lines():  # every server in the walkthrough binds loopback only
        argv = shlex.split(line)
        for flag in ("--host", "--dashboard-host", "--node-ip-address"):
            if flag in argv:
                assert argv[argv.index(flag) + 1] == "127.0.0.1", line
        assert "0.0.0.0" not in line and "RAY_AUTH_MODE=disabled" not in line


# ---- no credentials in any file --------------------------------------------------------------
_KEYWORD = r"(?i)\b[\w-]*(password|passwd|secret|token|access[_-]?key|api[_-]?key)[\w-]*\b['\"]?\s*[:=]\s*"
_CREDENTIAL = [
    re.compile(_KEYWORD + r"(['\"])(?!\$)[^'\"\s]{6,}\2"),  # a quoted literal
    re.compile(r"\w+://[^/\s:@$]+:[^/\s@$]+@"),  # user:password@host
    re.compile(r"AKIA[0-9A-Z]{16}"),  # an AWS access key id
]
# In YAML, ini and shell a literal needs no quotes (in Python an unquoted value is a name).
_UNQUOTED = re.compile(_KEYWORD + r"(?![$'\"])[\w+/.~!@#%^&*-]{6,}")
_SENSITIVE_ENV = re.compile(r"(?i)(PASSWORD|SECRET|TOKEN|ACCESS_KEY|KEY_ID|STORE_URI|DATABASE_URI)")


def credential_hits(text: str, python: bool = False) -> list[str]:
    rules = _CREDENTIAL if python else [*_CREDENTIAL, _UNQUOTED]
    return [line.strip() for line in text.splitlines()
            if "secretKeyRef" not in line and "secretRef" not in line and any(rx.search(line) for rx in rules)]


def test_the_credential_scan_catches_literals():
    assert credential_hits("  password: hunter2hunter2")
    assert credential_hits("MLFLOW_DB_URI=postgresql://mlflow:s3cr3t@db:5432/mlflow")
    assert credential_hits('aws_secret_access_key = "abcdEFGH1234"')
    assert not credential_hits('--from-literal=password="$MLFLOW_ADMIN_PASSWORD"')
    assert not credential_hits("valueFrom: {secretKeyRef: {name: mlflow-s3, key: secret-access-key}}")
    assert credential_hits('DB_PASSWORD = "s3cr3t-value"', python=True)
    assert not credential_hits("secrets = make(secrets)", python=True)


def _infra_files() -> list[Path]:
    return [p for p in INFRA.rglob("*") if p.is_file() and "__pycache__" not in p.parts]


def test_no_file_holds_a_credential():
    files = [*_infra_files(), REPO / "README.md"]
    assert len(files) >= 8
    hits = {str(p.relative_to(REPO)): h for p in files if (h := credential_hits(p.read_text(), p.suffix == ".py"))}
    assert not hits, hits


def _env_entries(node) -> list[dict]:
    if isinstance(node, dict):
        found = [e for e in node.get("env", []) if isinstance(e, dict) and "name" in e]
        return found + [e for v in node.values() for e in _env_entries(v)]
    if isinstance(node, list):
        return [e for v in node for e in _env_entries(v)]
    return []


def test_sensitive_env_vars_come_from_secrets():
    entries = [e for p in YAMLS for d in _docs(p) for e in _env_entries(d)]
    sensitive = [e for e in entries if _SENSITIVE_ENV.search(e["name"])]
    assert len(sensitive) >= 5
    for e in sensitive:
        assert "value" not in e and "secretKeyRef" in e["valueFrom"], e


# ---- embedded defaults bind loopback ---------------------------------------------------------
class _FakeSession:
    sparkContext = types.SimpleNamespace(setLogLevel=lambda level: None)


@pytest.fixture
def spark_options(monkeypatch, tmp_path):
    """Runtime.spark()'s builder options, captured instead of starting Spark."""
    from pyspark.sql import SparkSession

    from gen_pipeline.runtime import Runtime

    captured = {}

    def get_or_create(builder):
        captured.clear()
        captured.update(builder._options)
        return _FakeSession()

    monkeypatch.setattr(SparkSession.Builder, "getOrCreate", get_or_create)

    def options(**env):
        for var in ("SPARK_MASTER", "SPARK_DRIVER_HOST", "PYSPARK_GATEWAY_PORT"):
            monkeypatch.delenv(var, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        Runtime.from_env(tmp_path).spark()
        return dict(captured)

    return options


def test_embedded_spark_and_a_local_cluster_driver_bind_loopback(spark_options):
    local = spark_options()
    assert local["spark.master"].startswith("local[")
    assert local["spark.driver.host"] == local["spark.driver.bindAddress"] == "127.0.0.1"
    standalone = spark_options(SPARK_MASTER="spark://127.0.0.1:7077")
    assert standalone["spark.driver.host"] == standalone["spark.driver.bindAddress"] == "127.0.0.1"


def test_a_routable_driver_host_and_spark_submit_are_respected(spark_options):
    pod = spark_options(SPARK_MASTER="spark://spark-master:7077", SPARK_DRIVER_HOST="10.1.2.3")
    assert pod["spark.driver.host"] == "10.1.2.3" and pod["spark.driver.bindAddress"] == "0.0.0.0"
    submitted = spark_options(PYSPARK_GATEWAY_PORT="1234")  # spark-submit decides master and driver address
    assert not {"spark.master", "spark.driver.host", "spark.driver.bindAddress"} & set(submitted)


def test_spark_started_in_the_background_gives_the_session_or_its_error(spark_options, monkeypatch, tmp_path):
    from pyspark.sql import SparkSession

    from gen_pipeline.runtime import Runtime

    spark_options()  # getOrCreate captured: a fake session, no JVM
    assert isinstance(Runtime.from_env(tmp_path).spark_started()(), _FakeSession)

    def fail(builder):
        raise RuntimeError("Java gateway process exited before sending its port number")

    monkeypatch.setattr(SparkSession.Builder, "getOrCreate", fail)
    wait = Runtime.from_env(tmp_path).spark_started()
    with pytest.raises(RuntimeError, match="Java gateway"):  # raised where the session is needed
        wait()


def test_embedded_ray_and_mlflow_stay_local(monkeypatch, tmp_path):
    import ray

    from gen_pipeline.runtime import Runtime, quiet_environment

    monkeypatch.delenv("SPARK_LOCAL_IP", raising=False)
    quiet_environment()
    assert os.environ["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert os.environ.get("RAY_AUTH_MODE") != "disabled"  # never a library default
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    rt = Runtime.from_env(tmp_path)
    rt.ray()
    assert calls[-1].get("dashboard_host") == "127.0.0.1" and "address" not in calls[-1]
    assert rt.tracking_uri.startswith("sqlite:///")  # no server socket at all
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    rt.ray()
    assert calls[-1]["address"] == "127.0.0.1:6379"

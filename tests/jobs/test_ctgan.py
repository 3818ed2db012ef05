"""The CTGAN-style GAN through the CLI on a real slice of Adult: mode-specific normalisation in
preprocess, WGAN-GP training with the conditional vector, and ``generate --condition``."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gen_pipeline.cli import main

pytestmark = [pytest.mark.jobs, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
GAN_TINY = str(REPO / "configs" / "adult_gan_tiny.yaml")


@pytest.fixture(scope="module")
def gan_work(spark, ray_cluster, tmp_path_factory):
    w = tmp_path_factory.mktemp("ctgan")
    for stage in ("preprocess", "train"):
        assert main([stage, "--config", GAN_TINY, "--work-dir", str(w)]) == 0
    return w


def _generate(work: Path, out: Path, *extra: str) -> int:
    return main(["generate", "--config", GAN_TINY, "--work-dir", str(work), "--model", "models:/adult_gan_tiny@candidate",
                 "--out", str(out), *extra])


def test_preprocess_fits_modes_per_continuous_column(gan_work):
    spec = json.loads((gan_work / "runs" / "adult_gan_tiny" / "preprocess" / "transform_spec.json").read_text())
    cont = {c["name"]: c for c in spec["columns"] if c["kind"] == "continuous" and c["method"] != "lookup"}
    assert {c["method"] for c in cont.values()} == {"vgm"}
    looked_up = {c["name"]: c for c in spec["columns"] if c.get("method") == "lookup"}
    assert looked_up["education_num"]["from"] == "education"  # one number per level: looked up, not modelled
    for c in cont.values():
        assert len(c["means"]) == len(c["stds"]) == len(c["weights"]) >= 1
        assert abs(sum(c["weights"]) - 1) < 1e-6
    assert len(cont["capital_gain"]["means"]) >= 2  # the spike at 0 and the tail are separate modes


def test_generate_with_a_condition_gives_only_that_value(gan_work, tmp_path):
    out = tmp_path / "female"
    assert _generate(gan_work, out, "--rows", "4000", "--seed", "3", "--condition", "sex=Female") == 0
    df = pq.read_table(out).to_pandas()
    assert len(df) == 4000 and (df["sex"] == "Female").all()
    assert df["relationship"].nunique() > 1 and df["age"].between(17, 90).all()  # the rest still varies
    lineage = json.loads((out / "_lineage.json").read_text())
    assert lineage["conditions"] == {"sex": "Female"} and lineage["rows"] == 4000


@pytest.mark.parametrize("condition, message", [
    ("sex=female", "'female' is not in sex's training vocabulary"),
    ("age=30", "age is continuous"),
    ("sex", "expected COLUMN=VALUE"),
])
def test_a_bad_condition_is_a_one_line_error(gan_work, tmp_path, capsys, condition, message):
    assert _generate(gan_work, tmp_path / "bad", "--rows", "10", "--condition", condition) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "bad").exists()

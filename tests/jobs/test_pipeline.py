"""Every stage end to end through the CLI on a real slice of Adult, asserting on what each wrote."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest

from gen_pipeline.cli import main
from gen_pipeline.kinds.table.datasets import ADULT_SCHEMA

pytestmark = [pytest.mark.jobs, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "adult_tvae_tiny.yaml")


@pytest.fixture(scope="module")
def work(adult_work):
    return adult_work


@pytest.fixture(scope="module")
def spec(work):
    return json.loads((work / "runs" / "adult_tvae_tiny" / "preprocess" / "transform_spec.json").read_text())


def test_generated_rows_have_the_original_schema_and_lineage(work, spec):
    out = work / "outputs" / "adult_tvae_tiny" / "generated"
    table = pq.read_table(out)
    assert table.num_rows == 20_000
    assert table.schema.remove_metadata().equals(ADULT_SCHEMA.arrow_schema())  # names, order and types
    df = table.to_pandas()
    for col in spec["columns"]:
        if col.get("method") == "lookup":  # a function of another column (education_num of education)
            assert set(df[col["name"]].dropna()) <= set(col["values"])
        elif col["kind"] == "categorical":
            assert set(df[col["name"]].dropna()) <= set(c for c in col["categories"] if c is not None)
        else:
            assert df[col["name"]].min() >= col["min"] and df[col["name"]].max() <= col["max"]
    assert (out / "_SUCCESS").exists()
    lineage = json.loads((out / "_lineage.json").read_text())
    assert lineage["model_name"] == "adult_tvae_tiny" and lineage["seed"] == 7 and lineage["rows"] == 20_000
    assert lineage["run_id"] and lineage["model_version"]


def test_same_seed_gives_identical_files_and_a_rerun_replaces(work, checksums):
    a, b = work / "gen_a", work / "gen_b"
    args = ["generate", "--config", TINY, "--work-dir", str(work), "--rows", "12345"]
    assert main([*args, "--seed", "3", "--out", str(a)]) == 0
    assert main([*args, "--seed", "3", "--out", str(b)]) == 0
    assert checksums(a) == checksums(b) and len(checksums(a)) >= 2
    assert main([*args, "--seed", "3", "--out", str(a)]) == 0  # into the same path again
    assert pq.read_table(a).num_rows == 12345 and len(list(a.glob("part-*"))) == len(checksums(b))
    assert not [p for p in work.iterdir() if p.name.startswith(".gen_a.")]  # no staging left
    assert main([*args, "--seed", "4", "--out", str(b)]) == 0
    assert checksums(a) != checksums(b)


def test_scores_every_test_row_beside_its_columns(work):
    out = work / "outputs" / "adult_tvae_tiny" / "scored"
    df = pq.read_table(out).to_pandas()
    assert len(df) == 16_281  # every data line of adult.test: rows in == rows scored + rejected
    assert list(df.columns) == ["source", "line", *ADULT_SCHEMA.names, "score", "reason"]
    scored = df["score"].notna()
    assert scored.sum() + df["reason"].notna().sum() == len(df)
    assert scored.mean() > 0.99 and (df.loc[scored, "score"] > 0).all()
    # rows the tiny model never saw a category for get a reason, not a crash
    assert df.loc[~scored, "reason"].str.contains("unseen category").all()


def test_second_run_registers_a_new_version_and_the_gate_decides(work):
    assert main(["train", "--config", TINY, "--work-dir", str(work)]) == 0
    assert main(["evaluate", "--config", TINY, "--work-dir", str(work)]) == 0
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    versions = sorted(int(v.version) for v in client.search_model_versions("name='adult_tvae_tiny'"))
    assert versions == [1, 2]
    v1, v2 = client.get_model_version("adult_tvae_tiny", "1"), client.get_model_version("adult_tvae_tiny", "2")
    assert v1.tags["gate_decision"] == "promoted"
    champion = str(client.get_model_version_by_alias("adult_tvae_tiny", "champion").version)
    assert champion == ("2" if v2.tags["gate_decision"] == "promoted" else "1")
    assert str(client.get_model_version_by_alias("adult_tvae_tiny", "candidate").version) == "2"
    run = client.get_run(v2.run_id)
    assert "eval_quality_score" in run.data.metrics and "loss" in run.data.metrics
    m = run.data.metrics
    assert 0.0 <= m["eval_tstr_f1_mean"] <= 1.0 and m["eval_trtr_f1_mean"] > 0.3  # income is learnable from real rows
    assert m["eval_exact_copy_share"] < 0.05 and m["eval_dcr_median"] > 0.0 and m["eval_dcr_holdout_median"] > 0.0
    arts = [a.path for a in client.list_artifacts(v2.run_id, "evaluation")]
    assert {"evaluation/marginals_real_vs_synthetic.png", "evaluation/association_difference.png",
            "evaluation/report.html", "evaluation/report.json"} <= set(arts)


def test_gate_refuses_a_candidate_below_a_configured_minimum_and_says_why(work):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("adult_tvae_tiny", "champion").version
    assert main(["evaluate", "--config", TINY, "--work-dir", str(work), "--set", "evaluate.min_tstr_f1=0.99"]) == 0
    candidate = client.get_model_version_by_alias("adult_tvae_tiny", "candidate")
    assert candidate.tags["gate_decision"] == "rejected"
    assert "tstr_f1_mean=" in candidate.tags["gate_reason"] and "below the minimum 0.9900" in \
        candidate.tags["gate_reason"]
    assert client.get_model_version_by_alias("adult_tvae_tiny", "champion").version == champion


def test_champion_loads_from_a_plain_python_shell(work):
    code = (
        "import mlflow, pandas as pd\n"
        "m = mlflow.pyfunc.load_model('models:/adult_tvae_tiny@champion')\n"
        "out = m.predict(pd.DataFrame({'num_rows': [7], 'seed': [1]}))\n"
        "print(len(out), ','.join(out.columns), out['age'].dtype)\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == f"7 {','.join(ADULT_SCHEMA.names)} Int64"


def test_bad_model_and_row_count_are_one_line_errors(work, capsys):
    assert main(["generate", "--config", TINY, "--work-dir", str(work), "--model", "models:/nope@champion"]) == 2
    err = capsys.readouterr().err.strip()
    assert "models:/nope@champion" in err and len(err.splitlines()) == 1
    assert main(["generate", "--config", TINY, "--work-dir", str(work), "--rows", "0"]) == 2
    assert "--rows 0" in capsys.readouterr().err

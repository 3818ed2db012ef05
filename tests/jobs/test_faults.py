"""Faults and bad inputs end to end: each ends in a clear message and a consistent state."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gen_pipeline.cli import main

pytestmark = [pytest.mark.jobs, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "adult_tvae_tiny.yaml")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_spark_task_that_fails_once_is_retried_with_identical_output(adult_work, tmp_path, monkeypatch, checksums):
    args = ["generate", "--config", TINY, "--work-dir", str(adult_work), "--rows", "9000", "--seed", "11"]
    assert main([*args, "--out", str(tmp_path / "clean")]) == 0
    marker = tmp_path / "failed-once"
    monkeypatch.setenv("GEN_PIPELINE_FAULT_GENERATE", f"1:{marker}")
    assert main([*args, "--out", str(tmp_path / "retried")]) == 0
    assert marker.exists()  # the fault really fired in partition 1's first attempt
    assert checksums(tmp_path / "retried") == checksums(tmp_path / "clean")


def test_generate_killed_mid_write_leaves_the_old_output_and_the_next_run_completes(adult_work, tmp_path, checksums):
    out = tmp_path / "gen"
    base = ["generate", "--config", TINY, "--work-dir", str(adult_work), "--seed", "5", "--out", str(out)]
    assert main([*base, "--rows", "3000"]) == 0
    before = checksums(out)
    proc = subprocess.Popen([sys.executable, "-m", "gen_pipeline.cli", *base, "--rows", "3000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 120
    for line in proc.stdout:  # wait until the job is writing, then kill the whole process group
        if "rows over" in line or time.time() > deadline:
            break
    time.sleep(3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checksums(out) == before and pq.read_table(out).num_rows == 3000  # untouched
    assert list(tmp_path.glob(".gen.staging-*"))  # the killed run's half-written staging folder
    assert main([*base, "--rows", "4000"]) == 0
    assert pq.read_table(out).num_rows == 4000 and (out / "_SUCCESS").exists()
    assert not list(tmp_path.glob(".gen.*"))  # the stale staging folder was cleaned up


def test_missing_and_empty_score_inputs_are_one_line_errors(adult_work, tmp_path, capsys):
    base = ["score", "--config", TINY, "--work-dir", str(adult_work), "--out", str(tmp_path / "s")]
    assert main([*base, "--input", str(tmp_path / "nope.csv")]) == 2
    assert "nope.csv: input file not found" in _one_line_error(capsys)
    (tmp_path / "empty.csv").write_text("")
    assert main([*base, "--input", str(tmp_path / "empty.csv")]) == 2
    assert "empty.csv: the input file is empty" in _one_line_error(capsys)


def test_schema_drift_at_score_time_is_a_reason_per_row(adult_work, tmp_path, capsys):
    lines = (Path(os.environ["GEN_PIPELINE_DATA_DIR"]) / "adult" / "adult.test").read_text().splitlines()[1:6]
    drift = [
        lines[0],
        lines[1].replace("Private", "Space-agency"),  # an unseen category
        ", ".join(lines[2].split(", ")[:-1]),  # a missing column
        lines[3].replace(", 40,", ", lots,"),  # a wrong type
    ]
    (tmp_path / "drift.test").write_text("\n".join(drift) + "\n")
    out = tmp_path / "scored"
    assert main(["score", "--config", TINY, "--work-dir", str(adult_work), "--input", str(tmp_path / "drift.test"),
                 "--out", str(out)]) == 0
    df = pq.read_table(out).to_pandas().sort_values("line")
    assert len(df) == 4 and df["score"].notna().tolist() == [True, False, False, False]
    reasons = df["reason"].tolist()
    assert "unseen category 'Space-agency'" in reasons[1]
    assert "expected 15 fields" in reasons[2] and "column hours_per_week" in reasons[3]

    # A file missing a column on every row: nothing can be scored, so the job fails and says why.
    (tmp_path / "short.test").write_text("\n".join(", ".join(x.split(", ")[:-1]) for x in lines) + "\n")
    assert main(["score", "--config", TINY, "--work-dir", str(adult_work), "--input", str(tmp_path / "short.test"),
                 "--out", str(tmp_path / "none")]) == 2
    err = _one_line_error(capsys)
    assert "short.test: none of the 5 records could be scored; the first: expected 15 fields" in err
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("rows", ["-5", "0", "99999999999999"])
def test_bad_row_counts_are_refused(adult_work, capsys, rows):
    assert main(["generate", "--config", TINY, "--work-dir", str(adult_work), "--rows", rows]) == 2
    assert f"--rows {rows}" in _one_line_error(capsys)


def test_corrupt_preprocess_output_is_named(adult_work, tmp_path, capsys):
    import shutil

    work = tmp_path / "w"
    shutil.copytree(adult_work / "runs", work / "runs")
    shutil.copy(adult_work / "mlflow.db", work / "mlflow.db")
    test_dir = work / "runs" / "adult_tvae_tiny" / "preprocess" / "clean" / "test"
    for part in test_dir.glob("part-*.parquet"):
        part.write_bytes(b"PAR1 this is not parquet")
    assert main(["evaluate", "--config", TINY, "--work-dir", str(work)]) == 2
    err = _one_line_error(capsys)
    assert str(test_dir) in err and "preprocess" in err

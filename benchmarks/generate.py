"""Generate and score at scale, side by side in one run; prints JSON with rows/s and ratios.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/generate.py --rows 10000000 --work-dir work/bench

Generation, same model (Adult, ``--config``: the demo's TVAE by default, or another family such as
``configs/adult_tvae_ar.yaml``; speed does not depend on how long it trained), same cores:
  (a) one Python process, torch and BLAS with all cores' threads + pyarrow, writing one Parquet
      file with the sampler and writer settings of a Spark task;
  (b) our Spark generate job end to end (decode to the original schema, atomic commit), run as
      the CLI in a subprocess, at 1M and at --rows rows, with the driver's peak memory;
  (c) SDV 2.0 (comparison only): TVAE and GaussianCopula ``sample(1_000_000)``.
Scoring (Shuttle VAE): (a) one process over a 1M+ row resampled Shuttle CSV, (b) our Spark score
job over the same file; ROC-AUC against the anomaly labels beside a PCA reconstruction-error
baseline on the same held-out rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from monitor import run_monitored

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "gen_pipeline.cli"]


def sh(args: list[str], work: Path) -> dict:
    """Run the CLI in a subprocess, sampling the driver's and the JVM's peak RSS."""
    return run_monitored([*CLI, *args, "--work-dir", str(work)], cwd=REPO)


def has_champion(work: Path, name: str) -> bool:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    try:
        mlflow.MlflowClient().get_model_version_by_alias(name, "champion")
        return True
    except mlflow.exceptions.MlflowException:
        return False


def load_bundle(work: Path, model: str):
    import mlflow

    # Import this checkout's package first. Loading the pyfunc puts the copy of the code that
    # was logged with the model at the front of sys.path, and a package not yet imported would
    # come from there: with --reuse-models, (a) would time an older version of the sampler.
    import gen_pipeline.bundle  # noqa: F401

    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    return mlflow.pyfunc.load_model(model).unwrap_python_model().bundle


def single_process_generate(bundle, rows: int, out: Path, threads: int) -> float:
    """What one Spark task does (same sampler, same Parquet settings), as one process with every
    core's threads over all the rows."""
    import shutil

    import torch

    from gen_pipeline.stages.sparkkit import write_part

    torch.set_num_threads(threads)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    write_part(bundle.sample_arrow(rows, seed=7, dictionary=True), out, 0, string_statistics=False)
    return rows / (time.perf_counter() - t0)


def sdv_sample_rate(train_df, rows: int) -> dict:
    from sdv.metadata import Metadata
    from sdv.single_table import GaussianCopulaSynthesizer, TVAESynthesizer

    metadata = Metadata.detect_from_dataframes({"adult": train_df})
    out = {}
    for name, synth in (("sdv_tvae", TVAESynthesizer(metadata, epochs=1)),
                        ("sdv_gaussian_copula", GaussianCopulaSynthesizer(metadata))):
        synth.fit({"adult": train_df})  # SDV 2.0 takes a one-table dict
        proc = psutil.Process()
        before = proc.memory_info().rss
        t0 = time.perf_counter()
        synth.sample(rows)
        seconds = time.perf_counter() - t0
        out[name] = {"rows_per_s": rows / seconds, "rss_growth_mb": (proc.memory_info().rss - before) / 2**20}
    return out


def pca_auc(train_x: np.ndarray, test_x: np.ndarray, y: np.ndarray, components: int) -> float:
    from sklearn.decomposition import PCA
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    pca = PCA(n_components=components, random_state=0).fit(scaler.transform(train_x))
    z = scaler.transform(test_x)
    err = ((z - pca.inverse_transform(pca.transform(z))) ** 2).sum(1)
    return float(roc_auc_score(y, err))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--score-rows", type=int, default=1_000_000)
    parser.add_argument("--work-dir", default=str(REPO / "work" / "bench"))
    parser.add_argument("--config", default="configs/adult_tvae.yaml", help="the Adult model whose generation is timed")
    parser.add_argument("--skip-sdv", action="store_true")
    parser.add_argument("--skip-score", action="store_true", help="generation only")
    parser.add_argument("--reuse-models", action="store_true", help="keep champions already in --work-dir")
    args = parser.parse_args()
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    results: dict = {"cores": cores, "rows": args.rows}

    # A model for each side: Adult (--config, 2 epochs: speed only) and the Shuttle VAE (full config).
    results["config"] = args.config
    adult = ["--config", args.config, "--set", "name=bench_adult", "--set", "model_name=bench_adult"]
    shuttle = ["--config", "configs/shuttle_tvae.yaml"]
    if not (args.reuse_models and has_champion(work, "bench_adult")):
        sh(["run", *adult, "--set", "train.epochs=2", "--rows", "1000"], work)
    if not args.skip_score and not (args.reuse_models and has_champion(work, "shuttle_tvae")):
        sh(["run", *shuttle, "--rows", "1000"], work)

    # ---- generation ----------------------------------------------------------------------
    bundle = load_bundle(work, "models:/bench_adult@champion")
    results["generate_a_single_process_rows_per_s"] = single_process_generate(
        bundle, args.rows, work / "single_process", threads=cores)
    for n, key in ((1_000_000, "1m"), (args.rows, "full")):
        r = sh(["generate", *adult, "--rows", str(n), "--seed", "7", "--out", str(work / f"gen_{key}")], work)
        lineage = json.loads((work / f"gen_{key}" / "_lineage.json").read_text())
        results[f"generate_b_spark_{key}"] = {"rows": n, "job_rows_per_s": lineage["rows_per_s"],
                                              "cli_wall_s": r["wall_s"], "driver_peak_rss_mb": r["driver_peak_rss_mb"],
                                              "jvm_peak_rss_mb": r["jvm_peak_rss_mb"]}
    b = results["generate_b_spark_full"]["job_rows_per_s"]
    results["generate_ratio_b_over_a"] = b / results["generate_a_single_process_rows_per_s"]
    results["driver_peak_ratio_full_over_1m"] = (results["generate_b_spark_full"]["driver_peak_rss_mb"]
                                                 / results["generate_b_spark_1m"]["driver_peak_rss_mb"])
    if not args.skip_sdv:
        from gen_pipeline.layout import PreprocessOutput

        train_df = PreprocessOutput(work / "runs" / "bench_adult" / "preprocess").read_clean("train").sample(5000, random_state=0)
        for col in train_df.columns:
            if str(train_df[col].dtype) == "Int64":
                train_df[col] = train_df[col].astype("int64")
        try:
            results.update(sdv_sample_rate(train_df, 1_000_000))
            results["generate_ratio_b_over_sdv_tvae"] = b / results["sdv_tvae"]["rows_per_s"]
        except Exception as e:  # a baseline's API change must not cost the rest of the run
            results["sdv_error"] = f"{type(e).__name__}: {e}"[:300]
    print(json.dumps(results, default=float), flush=True)
    if args.skip_score:
        return

    # ---- scoring -------------------------------------------------------------------------
    import pandas as pd
    import torch

    from gen_pipeline.kinds.table.datasets import SHUTTLE_SCHEMA
    from gen_pipeline.layout import PreprocessOutput

    raw = pd.read_csv(Path(os.environ.get("GEN_PIPELINE_DATA_DIR", work / "datasets")) / "shuttle" / "shuttle.csv")
    big = raw.sample(args.score_rows, replace=True, random_state=0)
    big_csv = work / "shuttle_resampled.csv"
    big.to_csv(big_csv, index=False)
    sbundle = load_bundle(work, "models:/shuttle_tvae@champion")
    torch.set_num_threads(cores)
    t0 = time.perf_counter()  # (a) end to end like (b): read the CSV, score, write Parquet
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    for chunk in pd.read_csv(big_csv, chunksize=65_536):
        scores, reasons = sbundle.score(chunk.reset_index(drop=True))
        table = pa.Table.from_pandas(chunk.assign(score=scores, reason=reasons), preserve_index=False)
        writer = writer or pq.ParquetWriter(work / "scored_single_process.parquet", table.schema)
        writer.write_table(table)
    writer.close()
    results["score_a_single_process_rows_per_s"] = len(big) / (time.perf_counter() - t0)
    sh(["score", *shuttle, "--input", str(big_csv), "--out", str(work / "scored_big")], work)
    lineage = json.loads((work / "scored_big" / "_lineage.json").read_text())
    results["score_b_spark_rows_per_s"] = lineage["rows_in"] / lineage["seconds"]
    results["score_ratio_b_over_a"] = results["score_b_spark_rows_per_s"] / results["score_a_single_process_rows_per_s"]

    # ROC-AUC on the held-out test split (ours vs PCA, same rows) and over the whole file.
    pre = work / "runs" / "shuttle_tvae" / "preprocess"
    train, test = PreprocessOutput(pre).read_clean("train"), PreprocessOutput(pre).read_clean("test")
    feats = [c.name for c in SHUTTLE_SCHEMA.model_columns]
    scores, _ = sbundle.score(test)
    from sklearn.metrics import roc_auc_score

    y = test["anomaly"].astype(int).to_numpy()
    results["shuttle_test_roc_auc_ours"] = float(roc_auc_score(y, scores))
    for k in (2, 3, 5):
        results[f"shuttle_test_roc_auc_pca_{k}"] = pca_auc(train[feats].to_numpy(float), test[feats].to_numpy(float), y, k)
    whole = json.loads((work / "outputs" / "shuttle_tvae" / "scored" / "_lineage.json").read_text())
    results["shuttle_all_rows_roc_auc_ours"] = whole.get("roc_auc_anomaly")
    print(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()

"""Preprocess at scale beside the plain Spark job, on the same CSV and cores; prints JSON.

    .venv/bin/python benchmarks/preprocess.py --rows 10000000 --work-dir work/bench_pre

A synthetic table of ``--rows`` rows and 30 columns (an id; numbers with spikes, long tails and
nulls; categories of 3 to 50,000 distinct values; datetimes; a boolean; a label) is written once
as CSV under the work dir (``table_<rows>.csv``, reused by later runs). Then, each in its own
process (its own driver and JVM, the same Spark settings from ``Runtime.spark``):
  (a) ``gen-pipeline preprocess --data FILE --name bench_pre``: the schema is inferred once
      beforehand (timed on its own) and saved, so the timed run reads the saved schema;
  (b) the plain Spark job: ``DataFrameReader.csv`` with an explicit schema, per column the mean,
      min and max (numbers, datetimes) or the count of each value (categories, one stacked
      group-by), an xxhash64 split 80/10/10 and a Parquet write of each split.
Rows/s of both (their job time, without the JVM start), the ratio (a)/(b) (target >= 0.5) and
the peak RSS of the Python driver and, separately, of its JVM, at 1M rows and at ``--rows``
(target: driver peak at --rows / at 1M <= 1.2). With ``--epoch``, then one epoch of training
(the default model, 2 Ray Train workers) on the ``--rows`` table's encoded train split read
through the streamed Ray Data path (``train.ray_data_cache_fraction=0``: from Parquet, never
the object store), with its samples/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from monitor import run_monitored

REPO = Path(__file__).resolve().parents[1]
NAME = "bench_pre"
CHUNK = 500_000

NUMBERS = [f"num_{i:02d}" for i in range(13)]
LOW = [f"cat_low_{i}" for i in range(9)]  # 3..40 categories
HIGH = ["cat_high_50k", "cat_high_5k"]
TIMES = ["ts_event", "ts_update"]
DATES = ["day"]
OTHER = ["flag", "label"]


def columns() -> list[tuple[str, str]]:
    """(name, Spark type) of the 30 columns, in file order: the plain job's explicit schema."""
    return ([("id", "bigint")] + [(c, "double") for c in NUMBERS] + [(c, "string") for c in LOW + HIGH]
            + [(c, "timestamp") for c in TIMES] + [(c, "date") for c in DATES]
            + [("flag", "boolean"), ("label", "string")])


def chunk_table(start: int, n: int, seed: int):
    """``n`` rows (ids from ``start``) as an Arrow table."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    out: dict = {"id": pa.array(np.arange(start, start + n, dtype=np.int64))}

    def nulls(a: np.ndarray, share: float):
        return pa.array(a, mask=rng.random(n) < share) if share else pa.array(a)

    base = rng.normal(size=(n, 3))  # a few correlated columns
    nums = [
        np.round(np.exp(rng.normal(3, 1.2, n)), 2),                                   # lognormal, long tail
        np.where(rng.random(n) < 0.3, 0.0, np.round(rng.gamma(2, 500, n), 2)),        # spike at 0 + tail
        np.round((rng.pareto(1.5, n) + 1) * 10, 3),                                   # heavy tail
        np.round(base[:, 0] * 15 + 40, 1),
        np.round(base[:, 0] * 5 + base[:, 1] * 3, 4),
        rng.integers(0, 100, n).astype(float),                                        # integers
        np.where(rng.random(n) < 0.5, 99999.0, np.round(rng.normal(1000, 100, n))),   # spike at a sentinel
        np.round(rng.exponential(3, n), 3),
        np.round(rng.uniform(-1, 1, n), 6),
        np.round(np.concatenate([rng.normal(-5, 1, n // 2), rng.normal(5, 2, n - n // 2)])[rng.permutation(n)], 3),
        np.round(base[:, 2] * 1e6, 0),
        rng.poisson(2, n).astype(float),
        np.round(rng.standard_t(2, n), 4),                                            # t(2): outliers
    ]
    shares = [0, 0.05, 0, 0, 0.2, 0, 0, 0.01, 0, 0, 0, 0.5, 0]
    for name, a, s in zip(NUMBERS, nums, shares):
        out[name] = nulls(a, s)
    for i, name in enumerate(LOW):
        k = [3, 5, 7, 10, 12, 15, 20, 30, 40][i]
        p = 1 / np.arange(1, k + 1) ** 1.1
        codes = rng.choice(k, n, p=p / p.sum())
        values = np.array([f"{name[-1]}v{j}" for j in range(k)], dtype=object)[codes]
        out[name] = nulls(values, 0.03 if i % 3 == 0 else 0)
    for name, k in (("cat_high_50k", 50_000), ("cat_high_5k", 5_000)):
        codes = (rng.zipf(1.3, n) - 1) % k if k == 50_000 else rng.integers(0, k, n)
        out[name] = nulls(np.char.add("u", codes.astype(str)).astype(object), 0.02)
    t0 = np.datetime64("2020-01-01T00:00:00", "s")
    event = t0 + rng.integers(0, 4 * 365 * 86400, n).astype("timedelta64[s]")
    out["ts_event"] = pa.array(event)
    out["ts_update"] = nulls(event + rng.integers(0, 30 * 86400, n).astype("timedelta64[s]"), 0.1)
    out["day"] = pa.array(event.astype("datetime64[D]"))
    out["flag"] = nulls(rng.random(n) < 0.3, 0.01)
    out["label"] = pa.array(np.where(base[:, 0] + rng.normal(size=n) > 1, ">50K", "<=50K").astype(object))
    return pa.table(out)


def build_csv(path: Path, rows: int) -> float:
    """Write the table once (chunks, one header); returns the seconds taken. Reused when present."""
    import pyarrow.csv as pcsv

    if path.is_file():
        return 0.0
    t0 = time.perf_counter()
    part = path.with_name(f".{path.name}.part")
    with open(part, "wb") as f:
        for k, start in enumerate(range(0, rows, CHUNK)):
            t = chunk_table(start, min(CHUNK, rows - start), seed=k)
            pcsv.write_csv(t, f, pcsv.WriteOptions(include_header=k == 0, quoting_style="needed"))
    part.replace(path)
    return time.perf_counter() - t0


def monitored(cmd: list[str]) -> dict:
    """Run ``cmd`` with the repository on its path, sampling its peak memory (``monitor``)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep)}
    return run_monitored(cmd, cwd=REPO, env=env)


# ---- the child processes -------------------------------------------------------------------
def child_infer(csv: str, work: str) -> None:
    """Infer and save the schema preprocess will read (what its first run does first)."""
    from gen_pipeline.kinds.table.inference import resolve_schema
    from gen_pipeline.kinds.table.sources import TableSource
    from gen_pipeline.runtime import Runtime

    spark = Runtime.from_env(work).spark()
    t0 = time.perf_counter()
    resolve_schema(spark, TableSource.of(csv), NAME, Path(work), reinfer=True)
    print("RESULT " + json.dumps({"infer_s": time.perf_counter() - t0}), flush=True)


def child_plain(csv: str, out: str) -> None:
    """The plain Spark job: read with a schema, statistics, hash split, Parquet per split."""
    from pyspark.sql import functions as F

    from gen_pipeline.runtime import Runtime

    spark = Runtime.from_env(out).spark()
    ddl = ", ".join(f"`{n}` {t}" for n, t in columns())
    t0 = time.perf_counter()
    df = spark.read.options(header="true", mode="PERMISSIVE", timestampFormat="yyyy-MM-dd HH:mm:ss") \
        .schema(ddl).csv(csv)
    continuous = NUMBERS + TIMES + DATES
    aggs = [F.count(F.lit(1)).alias("rows")]
    for c in continuous:
        x = F.col(c).cast("double") if c in NUMBERS else F.unix_timestamp(c)
        aggs += [F.mean(x).alias(f"{c}_mean"), F.min(c).alias(f"{c}_min"), F.max(c).alias(f"{c}_max")]
    stats = df.agg(*aggs).collect()[0]
    cats = LOW + HIGH + OTHER
    stacked = df.select(F.explode(F.array(*[F.struct(F.lit(c).alias("column"), F.col(c).cast("string").alias("value"))
                                            for c in cats])).alias("kv")).select("kv.*")
    counts = stacked.groupBy("column", "value").count().collect()
    u = F.pmod(F.xxhash64(F.lit("salt"), *[F.col(n) for n, _ in columns()]), F.lit(1_000_000)) / 1_000_000.0
    split = F.when(u < 0.1, "test").when(u < 0.2, "validation").otherwise("train")
    df.withColumn("split", split).write.mode("overwrite").partitionBy("split").parquet(str(Path(out) / "splits"))
    seconds = time.perf_counter() - t0
    print("RESULT " + json.dumps({"rows": stats["rows"], "seconds": seconds, "categories_counted": len(counts)}),
          flush=True)


def child_epoch(csv: str, work: str) -> None:
    """One epoch of training on the preprocessed table, streamed from its encoded Parquet."""
    from gen_pipeline.config import config_for_data
    from gen_pipeline.layout import RunLayout
    from gen_pipeline.runtime import Runtime
    from gen_pipeline.training.driver import train_on_ray

    rt = Runtime.from_env(work)
    cfg = config_for_data(csv, NAME, [f"data.source={json.dumps(csv)}", "train.epochs=1", "train.min_steps=0",
                                      "train.loader=ray_data", "train.ray_data_cache_fraction=0"])
    t0 = time.perf_counter()
    result = train_on_ray(cfg, rt, RunLayout(rt.work_dir, NAME).preprocess, mlflow_run_id=None,
                          run_name=f"bench-epoch-{time.time_ns()}", ray_storage=rt.work_dir / "ray_results")
    epoch = result.history[0]
    print("RESULT " + json.dumps({"samples_per_s": epoch["samples_per_s"], "wall_s": time.perf_counter() - t0,
                                  "workers": cfg.train.num_workers, "batch_size": cfg.train.batch_size,
                                  "model": cfg.model.family}), flush=True)


def result(log: str) -> dict:
    return json.loads([ln for ln in log.splitlines() if ln.startswith("RESULT ")][-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--work-dir", default=str(REPO / "work" / "bench_pre"))
    parser.add_argument("--skip-1m", action="store_true", help="only --rows (not also 1M for the memory ratio)")
    parser.add_argument("--epoch", action="store_true", help="also one streamed training epoch on --rows")
    parser.add_argument("--child", choices=("infer", "plain", "epoch"), help=argparse.SUPPRESS)
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work_dir).resolve()
    if args.child == "infer":
        return child_infer(args.csv, str(work))
    if args.child == "plain":
        return child_plain(args.csv, str(work / "plain"))
    if args.child == "epoch":
        return child_epoch(args.csv, str(work))
    work.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, str(Path(__file__).resolve())]
    results: dict = {"cores": os.cpu_count(), "load_avg_at_start": os.getloadavg()[0]}
    sizes = sorted({args.rows} | (set() if args.skip_1m else {1_000_000}))
    for rows in sizes:
        csv = work / f"table_{rows}.csv"
        r: dict = {"rows": rows, "csv_build_s": round(build_csv(csv, rows), 1),
                   "csv_mb": round(csv.stat().st_size / 2**20)}
        inferred = monitored([*me, "--child", "infer", "--csv", str(csv), "--work-dir", str(work / f"w{rows}")])
        r["infer_s"] = round(result(inferred["log"])["infer_s"], 2)
        pre = monitored([sys.executable, "-m", "gen_pipeline.cli", "preprocess", "--data", str(csv), "--name", NAME,
                         "--work-dir", str(work / f"w{rows}")])
        manifest = json.loads((work / f"w{rows}" / "runs" / NAME / "preprocess" / "manifest.json").read_text())
        plain = monitored([*me, "--child", "plain", "--csv", str(csv), "--work-dir", str(work / f"w{rows}")])
        p = result(plain["log"])
        assert p["rows"] == rows == manifest["rows_in"], (p["rows"], rows, manifest["rows_in"])
        r["preprocess"] = {"job_s": manifest["seconds"], "rows_per_s": round(rows / manifest["seconds"]),
                           "rows_written": manifest["rows_written"], "rows_quarantined": manifest["rows_quarantined"],
                           "encoded_dim": manifest.get("encoded_dim"),
                           **{k: v for k, v in pre.items() if k != "log"}}
        r["plain_spark"] = {"job_s": round(p["seconds"], 2), "rows_per_s": round(rows / p["seconds"]),
                            **{k: v for k, v in plain.items() if k != "log"}}
        r["ratio_preprocess_over_plain"] = round(r["preprocess"]["rows_per_s"] / r["plain_spark"]["rows_per_s"], 3)
        r["load_avg_after"] = os.getloadavg()[0]
        if args.epoch and rows == args.rows:
            try:
                epoch = monitored([*me, "--child", "epoch", "--csv", str(csv), "--work-dir", str(work / f"w{rows}")])
                r["streamed_epoch"] = {**result(epoch["log"]), "train_rows": manifest["splits"]["train"],
                                       **{k: v for k, v in epoch.items() if k != "log"}}
            except SystemExit as e:  # the preprocess figures stand without it
                r["streamed_epoch"] = {"failed": str(e)[-2000:]}
        results[f"rows_{rows}"] = r
        print(json.dumps(r), flush=True)
        shutil.rmtree(work / f"w{rows}" / "plain", ignore_errors=True)
    if len(sizes) == 2:
        lo, hi = (results[f"rows_{n}"]["preprocess"] for n in sizes)
        results["driver_peak_ratio"] = round(hi["driver_peak_rss_mb"] / lo["driver_peak_rss_mb"], 3)
        results["jvm_peak_ratio"] = round(hi["jvm_peak_rss_mb"] / lo["jvm_peak_rss_mb"], 3)
    results["load_avg_at_end"] = os.getloadavg()[0]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

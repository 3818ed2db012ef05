"""Training input pipelines side by side in one run; prints JSON with samples/s and ratios.

    nice .venv/bin/python benchmarks/train_input.py --work-dir work/bench_train

The same model (configs/adult_tvae.yaml: Adult TVAE, batch 500) and the same training step, run
by our Ray Train shell (``train_on_ray``, DDP) with 1 and 2 workers, fed from:
  (a) tensors already in memory (``train.loader=memory``: each worker reads the table once);
  (b) petastorm (``make_batch_reader`` over this worker's row groups, shuffled per row group);
  (c) Ray Data (``read_parquet`` -> the worker's split or shard -> ``loaders.windowed_batches``).
Adult's encoded train split (39k rows) is tiled ``--copies`` times into Parquet files laid out
as preprocess writes them, so an epoch is long enough that per-epoch start-up is measured at
its real weight rather than dominating. samples/s is the mean over epochs after the first
(the first includes reader start-up and Ray Data's first read), averaged over ``--repeats``
runs made in alternating order (memory, petastorm, Ray Data, then Ray Data, petastorm, memory)
so that a drift in the shared machine's load falls on every loader alike; targets: (b)/(a) and
(c)/(a) >= 0.9 at the same worker count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "adult_tvae.yaml"


def preprocessed(work: Path) -> Path:
    """Adult preprocessed by our Spark job (run once into ``work``)."""
    pre = work / "runs" / "adult_tvae" / "preprocess"
    if not (pre / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "gen_pipeline.cli", "preprocess", "--config", str(CONFIG),
                        "--work-dir", str(work)], cwd=REPO, check=True)
    return pre


def tiled(pre: Path, out: Path, copies: int, files: int) -> Path:
    """A preprocess folder whose train split is Adult's encoded train rows ``copies`` times."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from gen_pipeline.stages.preprocess import ENCODED_PARQUET_OPTIONS as written_as

    manifest = json.loads((pre / "manifest.json").read_text())
    rows = manifest["splits"]["train"] * copies
    layout = json.dumps(written_as, sort_keys=True)  # a folder tiled with another layout is written again
    if (out / "manifest.json").is_file():
        done = json.loads((out / "manifest.json").read_text())
        if done["splits"]["train"] == rows and done.get("tiled_layout") == layout:
            return out
    shutil.rmtree(out, ignore_errors=True)
    (out / "encoded" / "train").mkdir(parents=True)
    table = ds.dataset(str(pre / "encoded" / "train"), format="parquet").to_table(columns=["features"])
    big = pa.concat_tables([table] * copies).combine_chunks()
    per_file = -(-big.num_rows // files)
    for i in range(files):  # one row group per file, as Spark writes a file this size
        pq.write_table(big.slice(i * per_file, per_file), out / "encoded" / "train" / f"part-{i:05d}.parquet",
                       row_group_size=per_file, compression=written_as["compression"],
                       use_dictionary=written_as["parquet.enable.dictionary"] == "true")
    shutil.copy(pre / "transform_spec.json", out / "transform_spec.json")
    manifest["splits"]["train"] = big.num_rows
    manifest["tiled_layout"] = layout
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def measure(cfg, rt, pre: Path, loader: str, workers: int, epochs: int) -> dict:
    from gen_pipeline.training.driver import train_on_ray

    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={
        "loader": loader, "num_workers": workers, "epochs": epochs})})
    t0 = time.perf_counter()
    result = train_on_ray(cfg, rt, pre, mlflow_run_id=None, run_name=f"bench-{loader}-{workers}w-{time.time_ns()}",
                          ray_storage=rt.work_dir / "ray_results")
    steady = [h["samples_per_s"] for h in result.history[1:]]
    return {"samples_per_s": statistics.mean(steady), "samples_per_s_min": min(steady),
            "samples_per_s_max": max(steady), "first_epoch_samples_per_s": result.history[0]["samples_per_s"],
            "wall_s": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work-dir", default=str(REPO / "work" / "bench_train"))
    parser.add_argument("--copies", type=int, default=5, help="times Adult's train split is tiled")
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--loaders", default="memory,petastorm,ray_data")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs per loader, in alternating order (ABC, CBA, ...) so drift in the "
                             "machine's load cancels out of the ratios")
    args = parser.parse_args()
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)

    from gen_pipeline.config import load_config
    from gen_pipeline.runtime import Runtime

    rt = Runtime.from_env(work)
    pre = tiled(preprocessed(work), work / "tiled", args.copies, args.files)
    cfg = load_config(CONFIG)
    load = os.getloadavg()
    results: dict = {"cores": os.cpu_count(), "train_rows": json.loads((pre / "manifest.json").read_text())
                     ["splits"]["train"], "batch_size": cfg.train.batch_size, "epochs": args.epochs,
                     "loadavg_1_5_15_at_start": [round(x, 2) for x in load]}
    rt.ray()
    loaders = args.loaders.split(",")
    for workers in map(int, args.workers.split(",")):
        runs: dict[str, list[dict]] = {loader: [] for loader in loaders}
        for r in range(args.repeats):
            for loader in loaders if r % 2 == 0 else loaders[::-1]:
                runs[loader].append(measure(cfg, rt, pre, loader, workers, args.epochs))
                print(f"[bench] {loader} x{workers} run {r + 1}: {runs[loader][-1]['samples_per_s']:.0f} samples/s",
                      flush=True)
        for loader, measured in runs.items():
            results[f"{loader}_{workers}w"] = {
                "samples_per_s": statistics.mean(m["samples_per_s"] for m in measured),
                "samples_per_s_per_run": [round(m["samples_per_s"]) for m in measured], "runs": measured}
        base = results.get(f"memory_{workers}w", {}).get("samples_per_s")
        for loader in ("petastorm", "ray_data"):
            if base and f"{loader}_{workers}w" in results:
                results[f"ratio_{loader}_over_memory_{workers}w"] = results[f"{loader}_{workers}w"]["samples_per_s"] / base
    results["loadavg_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()

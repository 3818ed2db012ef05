"""Tabular quality on UCI Adult, side by side: SDV's models against ours, one evaluator.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/tabular_quality.py --work-dir work/bench_quality

Every model learns from the same rows (our preprocess job's clean train split of ``adult.data``,
the split the papers use, ``data.split: files``; its validation rows are carved from
``adult.data``) and is judged on the same held-out real test split (``adult.test``) by the same function
(``gen_pipeline.kinds.table.metrics.tabular_report``): SDMetrics Quality Score (strong pairs, as SDMetrics
0.32 reports it, and over all pairs, as the papers report it), the papers' gradient-boosted
detection AUC and train-on-synthetic AUC (``gen_pipeline.detection``: 200 trees of depth 6,
5-fold detection, as many synthetic rows as real training rows) with the train-on-real AUC
beside them, logistic detection AUC, train-on-synthetic-test-on-real with SDGym's four
classifiers, distance to closest record and exact copies. Two reference rows that need no model
are scored the same way on the same split: ``ref_real_holdout`` (the real validation split, rows
no model trained on) and ``ref_independent_marginals`` (every column drawn on its own from the
real training rows): the ceiling and the floor of each figure. Models:
  sdv_gaussian_copula, sdv_tvae, sdv_ctgan  SDV 2.0 with its defaults (300 epochs for the two
                                            networks); comparison only, SDV is BSL-licensed
  ours_tvae, ours_ctgan, ...                gen_pipeline's training job (Ray Train, 2 workers)
                                            with the named configs/*.yaml
Each model is fitted once and its samples are kept under --work-dir/models/<name>/ with the
train seconds, the in-process sampling rows/s and the machine's load; `--reuse` evaluates kept
samples again without refitting (the evaluation always runs for every model in this run).
Prints one JSON table and a side-by-side text table. A quick check that everything runs:
    --sdv-epochs 1 --set train.epochs=1 --gbt-max-rows 5000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SDV_MODELS = ("sdv_gaussian_copula", "sdv_tvae", "sdv_ctgan")
# name -> (config, overrides): each our model is the training job on a named config
OUR_MODELS = {
    "ours_tvae": ("configs/adult_tvae.yaml", []),
    "ours_tvae_quantile": ("configs/adult_tvae.yaml", ["name=adult_tvae_quantile", "transform.continuous=quantile"]),
    "ours_ctgan": ("configs/adult_ctgan.yaml", []),
    "ours_tvae_ar": ("configs/adult_tvae_ar.yaml", []),
}


def load_splits(work: Path):
    """Run our preprocess job once; return (train, validation, test, schema) in the original schema."""
    from gen_pipeline.config import load_config
    from gen_pipeline.kinds.table.schema import TableSchema
    from gen_pipeline.layout import SCHEMA_FILE, PreprocessOutput, RunLayout
    from gen_pipeline.runtime import Runtime
    from gen_pipeline.stages.preprocess import stage_preprocess

    cfg = load_config(REPO / OUR_MODELS["ours_tvae"][0])
    rt = Runtime.from_env(work / "pipeline")
    pre = PreprocessOutput(RunLayout(rt.work_dir, cfg.name).preprocess)
    if not pre.exists():
        stage_preprocess(cfg, rt)
    schema = TableSchema.from_dict(json.loads((pre.root / SCHEMA_FILE).read_text()))
    return pre.read_clean("train"), pre.read_clean("validation"), pre.read_clean("test"), schema


def _plain(df: pd.DataFrame, schema) -> pd.DataFrame:
    """Nullable Int64 -> float64 (SDV wants NaN, not pd.NA)."""
    cols = [c.name for c in schema.model_columns]
    return df[cols].astype({c.name: "float64" for c in schema.model_columns if c.kind == "continuous"})


def fit_sdv(name: str, train: pd.DataFrame, schema, rows: int, seed: int,
            epochs: int | None = None, verbose: bool = False) -> tuple[pd.DataFrame, float, float]:
    import numpy as np
    import torch
    from sdv.metadata import Metadata
    from sdv.single_table import CTGANSynthesizer, GaussianCopulaSynthesizer, TVAESynthesizer

    np.random.seed(seed)
    torch.manual_seed(seed)
    data = _plain(train, schema)
    metadata = Metadata.detect_from_dataframes({"adult": data})
    for c in schema.model_columns:
        metadata.update_column(column_name=c.name, sdtype="numerical" if c.kind == "continuous" else "categorical",
                               table_name="adult")
    cls = {"sdv_gaussian_copula": GaussianCopulaSynthesizer, "sdv_tvae": TVAESynthesizer,
           "sdv_ctgan": CTGANSynthesizer}[name]
    kwargs = {} if name == "sdv_gaussian_copula" else {"verbose": verbose, **({"epochs": epochs} if epochs else {})}
    synth = cls(metadata, **kwargs)
    t0 = time.perf_counter()
    synth.fit({"adult": data})  # SDV 2.0 takes a one-table dict
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = synth.sample(rows)
    return (out["adult"] if isinstance(out, dict) else out), seconds, rows / (time.perf_counter() - t0)


def fit_ours(name: str, work: Path, rows: int, seed: int, extra: list[str],
             tag: str) -> tuple[pd.DataFrame, float, float]:
    from gen_pipeline.config import load_config
    from gen_pipeline.layout import PreprocessOutput, RunLayout
    from gen_pipeline.registry import resolve
    from gen_pipeline.runtime import Runtime
    from gen_pipeline.stages.preprocess import stage_preprocess
    from gen_pipeline.stages.train import stage_train

    path, overrides = OUR_MODELS[name]
    cfg = load_config(REPO / path, [*overrides, *extra, f"model_name=bench_{name}{tag}"])
    rt = Runtime.from_env(work / "pipeline")
    if not PreprocessOutput(RunLayout(rt.work_dir, cfg.name).preprocess).exists():  # its own encoding, the same split
        stage_preprocess(cfg, rt)
    t0 = time.perf_counter()
    stage_train(cfg, rt)
    seconds = time.perf_counter() - t0  # wall time of the whole job: Ray start, workers, registration
    _, model = resolve(f"models:/{cfg.model_name}@candidate")
    t0 = time.perf_counter()
    out = model.bundle.sample(rows, seed)
    return out, seconds, rows / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=REPO / "work" / "bench_quality")
    parser.add_argument("--models", default=",".join([*SDV_MODELS, *OUR_MODELS]))
    parser.add_argument("--phase", choices=["all", "fit", "evaluate"], default="all")
    parser.add_argument("--reuse", action="store_true", help="evaluate kept samples instead of refitting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for our models' configs, e.g. --set train.epochs=60")
    parser.add_argument("--tag", default="", help="suffix of the kept samples' folders, to compare variants")
    parser.add_argument("--sdv-epochs", type=int, default=None, help="SDV TVAE/CTGAN epochs (default: SDV's 300)")
    parser.add_argument("--sdv-verbose", action="store_true", help="SDV TVAE/CTGAN print each epoch's losses")
    parser.add_argument("--max-rows", type=int, default=10_000, help="rows per frame for SDMetrics, logistic detection"
                        " and SDGym's classifiers")
    parser.add_argument("--gbt-max-rows", type=int, default=50_000, help="row cap of the gradient-boosted protocol")
    args = parser.parse_args()
    work = args.work_dir.resolve()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(names) - set(SDV_MODELS) - set(OUR_MODELS)
    if unknown:
        sys.exit(f"--models: unknown {sorted(unknown)}; choose from {[*SDV_MODELS, *OUR_MODELS]}")

    train, validation, test, schema = load_splits(work)
    rows = len(train)  # SDGym's protocol: as many synthetic rows as real training rows
    if args.phase in ("all", "fit"):
        for name in names:
            d = work / "models" / f"{name}{args.tag}"
            if args.reuse and (d / "meta.json").is_file():
                continue
            d.mkdir(parents=True, exist_ok=True)
            load0 = os.getloadavg()[0]
            print(f"[bench] fitting {name} on {len(train):,} rows (load {load0:.1f})", flush=True)
            if name in SDV_MODELS:
                synth, seconds, rows_per_s = fit_sdv(name, train, schema, rows, args.seed, args.sdv_epochs,
                                                     args.sdv_verbose)
            else:
                synth, seconds, rows_per_s = fit_ours(name, work, rows, args.seed, args.extra, args.tag)
            _plain(synth, schema).to_parquet(d / "synthetic.parquet")
            meta = {"train_seconds": round(seconds, 1), "sample_rows_per_s": round(rows_per_s),
                    "loadavg_before": round(load0, 2),
                    "loadavg_after": round(os.getloadavg()[0], 2), "rows": rows,
                    "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
            (d / "meta.json").write_text(json.dumps(meta, indent=1))
            print(f"[bench] {name}: trained in {seconds:.0f} s", flush=True)
    if args.phase == "fit":
        return

    from gen_pipeline.kinds.table.metrics import REFERENCE_METRICS, reference_metrics, tabular_report

    table = {"real_train_rows": len(train), "real_validation_rows": len(validation), "real_test_rows": len(test),
             "models": {}}
    for name in (f"{n}{args.tag}" for n in names):
        d = work / "models" / name
        if not (d / "meta.json").is_file():
            print(f"[bench] {name}: no samples kept under {d}; fit it first", flush=True)
            continue
        synth = pd.read_parquet(d / "synthetic.parquet")
        t0 = time.perf_counter()
        metrics = tabular_report(train, test, synth, schema, label="income", positive=">50K", max_rows=args.max_rows,
                                 gbt_max_rows=args.gbt_max_rows, seed=args.seed)
        meta = json.loads((d / "meta.json").read_text())
        table["models"][name] = {**meta, "evaluate_seconds": round(time.perf_counter() - t0, 1),
                                 **{k: round(v, 4) for k, v in metrics.items()
                                    if not k.startswith("shape_") and isinstance(v, float)}}
        print(f"[bench] {name}: {json.dumps(table['models'][name])}", flush=True)
    # the two rows that need no model, on the same split and the same rows
    t0 = time.perf_counter()
    refs = reference_metrics(train, test, validation, schema, "income", max_rows=args.max_rows,
                             gbt_max_rows=args.gbt_max_rows, seed=args.seed)
    for ref, row in (("holdout", "ref_real_holdout"), ("marginals", "ref_independent_marginals")):
        table["models"][row] = {"train_seconds": 0.0, **{m: round(refs[f"ref_{ref}_{m}"], 4) for m in REFERENCE_METRICS
                                                         if f"ref_{ref}_{m}" in refs}}
    table["reference_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(table, indent=1))
    print(side_by_side(table["models"]))


SHOWN = {"quality_score_all_pairs": "q_all_pairs", "detection_auc_gbt": "det_gbt", "tstr_auc_gbt": "tstr_gbt",
         "trtr_auc_gbt": "trtr_gbt", "quality_score": "q_strong", "detection_auc": "det_logistic",
         "tstr_f1_mean": "tstr_f1", "dcr_ratio": "dcr_ratio", "train_seconds": "train_s",
         "sample_rows_per_s": "rows/s", "evaluate_seconds": "eval_s"}


def side_by_side(models: dict[str, dict]) -> str:
    """The models and the reference rows as a fixed-width text table (a dash where not measured)."""
    width = max([len(n) for n in models] + [10])
    lines = [" ".join([f"{'model':<{width}}", *(f"{label:>12}" for label in SHOWN.values())])]
    for name, row in models.items():
        cells = (f"{row[k]:>12.{1 if k.endswith('seconds') else 4}f}" if isinstance(row.get(k), float)
                 else f"{row.get(k, '-')!s:>12}" for k in SHOWN)
        lines.append(" ".join([f"{name:<{width}}", *cells]))
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""The five stages as functions of (config, runtime): what the CLI and the jobs call.

Each stage opens the engine it needs through ``Runtime``, reads, calls one library function,
writes, and returns a small dict saying where its outputs went.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from gen_pipeline.config import MAX_ROWS, PipelineConfig
from gen_pipeline.errors import PipelineError
from gen_pipeline.images import is_image_dataset
from gen_pipeline.runtime import Runtime


def preprocess_dir(cfg: PipelineConfig, rt: Runtime) -> Path:
    return rt.run_dir(cfg.name) / "preprocess"


def default_output(cfg: PipelineConfig, rt: Runtime, what: str) -> Path:
    return rt.work_dir / "outputs" / cfg.name / what


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def stage_preprocess(cfg: PipelineConfig, rt: Runtime) -> dict:
    from gen_pipeline.datasets import raw_table
    from gen_pipeline.preprocess import run_preprocess

    if is_image_dataset(cfg.data.dataset):  # idx.gz / PNG folder / .npz: gen_pipeline.images
        from gen_pipeline.images import image_source, run_image_preprocess

        manifest = run_image_preprocess(rt.spark(), image_source(cfg, rt.datasets_dir), cfg, preprocess_dir(cfg, rt))
        return {"preprocess": str(preprocess_dir(cfg, rt)), "rows_written": manifest["rows_written"],
                "rows_quarantined": manifest["rows_quarantined"]}
    if cfg.data.source:  # your own table: gen_pipeline.sources / gen_pipeline.inference
        from gen_pipeline.inference import source_table

        table = source_table(cfg, rt)
    else:
        table = raw_table(cfg.data.dataset, rt.datasets_dir)
    manifest = run_preprocess(rt.spark(), table, cfg, preprocess_dir(cfg, rt))
    return {"preprocess": str(preprocess_dir(cfg, rt)), "rows_written": manifest["rows_written"],
            "rows_quarantined": manifest["rows_quarantined"]}


def stage_train(cfg: PipelineConfig, rt: Runtime, fail_at_epoch: int | None = None) -> dict:
    from gen_pipeline.bundle import ModelBundle
    from gen_pipeline.registry import log_and_register
    from gen_pipeline.train import log_missing_epochs, plan_run, train_on_ray

    pre = preprocess_dir(cfg, rt)
    if not (pre / "manifest.json").is_file():
        raise PipelineError(f"{pre}: no preprocess output; run `gen-pipeline preprocess --config ...` first")
    spec = json.loads((pre / "transform_spec.json").read_text())
    manifest = json.loads((pre / "manifest.json").read_text())
    if manifest.get("kind") == "image" and len(manifest["classes"]) > 1:  # rank 0 logs FID per epoch with it
        from gen_pipeline.image_eval import ensure_classifier

        ensure_classifier(pre, cfg.evaluate.classifier_epochs)
    # The Ray Train run: the one a killed driver left unfinished (same config and data), else new.
    runs_dir = rt.run_dir(cfg.name) / "train"
    record = plan_run(cfg, runs_dir, manifest["fingerprint"])
    mlflow = rt.mlflow(cfg.name)
    client = mlflow.MlflowClient()
    resume_id = record.mlflow_run_id if record.mlflow_run_id and _run_exists(client, record.mlflow_run_id) else None
    with mlflow.start_run(run_id=resume_id, run_name=None if resume_id else f"train-{cfg.model.family}") as run:
        if resume_id:  # its params and manifest were logged by the driver that started it
            print(f"[train] continuing run {record.name} (MLflow run {resume_id}) left by a driver that stopped",
                  flush=True)
        else:
            mlflow.log_params(_flatten(cfg.model_dump(mode="json")))
            mlflow.log_dict(manifest, "preprocess/manifest.json")
        mlflow.set_tags({"data_fingerprint": manifest["fingerprint"], "stage": "train", "ray_run_name": record.name})
        record.mlflow_run_id = run.info.run_id
        record.save(runs_dir)
        result = train_on_ray(cfg, rt, pre, mlflow_run_id=run.info.run_id, run_name=record.name,
                              fail_at_epoch=fail_at_epoch)
        backfilled = log_missing_epochs(client, run.info.run_id, result.history)
        if backfilled:
            print(f"[train] logged {backfilled} epoch(s) MLflow had missed, from the checkpoint's history", flush=True)
        mlflow.log_metric("train_seconds", result.seconds)
        if result.resumed_from:
            mlflow.set_tag("resumed_from_epochs", ",".join(map(str, result.resumed_from)))
        bundle = ModelBundle(cfg, spec, result.state_dict, manifest)
        version, uri = log_and_register(bundle, cfg.model_name)
        record.model_version = str(version)
        record.save(runs_dir)
    print(f"[train] registered {cfg.model_name} version {version} as @candidate (run {run.info.run_id}); "
          f"checkpoints in {result.checkpoint_path}", flush=True)
    return {"model": f"models:/{cfg.model_name}@candidate", "version": version, "run_id": run.info.run_id,
            "checkpoints": result.checkpoint_path, "ray_run_name": record.name, "resumed_from": result.resumed_from,
            "epochs_trained": len(result.history)}


def _run_exists(client, run_id: str) -> bool:
    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except Exception:  # deleted, or logged to another tracking server
        return False


# Rows of the train split evaluation reads (the exact-copy and DCR reference, TRTR's training set).
# The clean split's files are ordered by a hash of each row, so their head is a uniform sample.
TRAIN_REFERENCE_ROWS = 200_000


def _read_head(pre: Path, split: str, n: int):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as ds

    from gen_pipeline.preprocess import read_split

    try:
        table = ds.dataset(pre / "clean" / split, format="parquet").head(n)
    except (pa.ArrowInvalid, OSError, FileNotFoundError):
        return read_split(pre, split)  # raises the one-line error that names the folder
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def _gate_bounds(ev) -> tuple[dict[str, float], dict[str, float]]:
    """The configured bounds a candidate must meet: (minimums, maximums) by metric name."""
    minimums = {"quality_score": ev.min_quality_score}
    if ev.min_tstr_f1 is not None:
        minimums["tstr_f1_mean"] = ev.min_tstr_f1
    maximums = {k: v for k, v in {"detection_auc": ev.max_detection_auc,
                                   "exact_copy_share": ev.max_exact_copy_share}.items() if v is not None}
    return minimums, maximums


def stage_evaluate(cfg: PipelineConfig, rt: Runtime) -> dict:
    from gen_pipeline.evaluate import evaluate_bundle, gate, report_figures, report_html
    from gen_pipeline.preprocess import read_split
    from gen_pipeline.registry import CANDIDATE, CHAMPION, alias_version, resolve

    if is_image_dataset(cfg.data.dataset):  # FID, conditional accuracy, ELBO: gen_pipeline.image_eval
        from gen_pipeline.image_eval import stage_evaluate_images

        return stage_evaluate_images(cfg, rt, preprocess_dir(cfg, rt))
    ev = cfg.evaluate
    mlflow = rt.mlflow(cfg.name)
    client = mlflow.MlflowClient()
    cand_mv, cand = resolve(f"models:/{cfg.model_name}@{CANDIDATE}")
    real = read_split(preprocess_dir(cfg, rt), "test")
    real_train = _read_head(preprocess_dir(cfg, rt), "train", TRAIN_REFERENCE_ROWS)
    n = ev.num_rows or len(real)

    def evaluate(bundle):
        return evaluate_bundle(bundle, real_train, real, n, ev.seed, ev.tstr_label, ev.tstr_positive, ev.max_rows)

    metrics, synth = evaluate(cand.bundle)
    champ_mv = alias_version(cfg.model_name, CHAMPION)
    champ_metrics = None
    if champ_mv is not None and champ_mv.version != cand_mv.version:
        # Re-evaluate the champion on the same held-out rows and seed: a like-for-like comparison.
        _, champ = resolve(f"models:/{cfg.model_name}/{champ_mv.version}")
        champ_metrics, _ = evaluate(champ.bundle)
    promote, reason = gate(metrics, champ_metrics, ev.primary_metric, *_gate_bounds(ev), ev.min_improvement)
    if champ_mv is not None and champ_mv.version == cand_mv.version:
        promote, reason = False, "the candidate is already the champion" + ("" if promote else f"; {reason}")

    for k, v in metrics.items():
        client.log_metric(cand_mv.run_id, f"eval_{k}", v)
    with tempfile.TemporaryDirectory() as d:
        figures = report_figures(real, synth, cand.bundle.schema, ev.max_rows, ev.seed)
        for name, fig in figures.items():  # marginals_real_vs_synthetic.png, association_difference.png
            fig.savefig(Path(d) / f"{name}.png", dpi=80)
            client.log_artifact(cand_mv.run_id, str(Path(d) / f"{name}.png"), "evaluation")
        title = f"{cfg.model_name} v{cand_mv.version}: {'promoted' if promote else 'not promoted'} ({reason})"
        (Path(d) / "report.html").write_text(report_html(metrics, figures, title))  # closes the figures
        client.log_artifact(cand_mv.run_id, str(Path(d) / "report.html"), "evaluation")
        (Path(d) / "report.json").write_text(json.dumps(
            {"metrics": metrics, "champion_metrics": champ_metrics, "promoted": promote, "reason": reason}, indent=1))
        client.log_artifact(cand_mv.run_id, str(Path(d) / "report.json"), "evaluation")
    for k, v in {"gate_decision": "promoted" if promote else "rejected", "gate_reason": reason,
                 ev.primary_metric: f"{metrics[ev.primary_metric]:.6f}"}.items():
        client.set_model_version_tag(cfg.model_name, cand_mv.version, k, v)
    if promote:
        client.set_registered_model_alias(cfg.model_name, CHAMPION, cand_mv.version)
    shown = ("quality_score", "column_shapes", "column_pair_trends", "detection_auc", "tstr_f1_mean",
             "trtr_f1_mean", "dcr_median", "dcr_holdout_median", "exact_copy_share", "test_neg_elbo_nats")
    summary = " ".join(f"{k}={metrics[k]:.4f}" for k in shown if k in metrics)
    summary += "".join(f" {k}={v:.4f}" for k, v in metrics.items() if k.startswith("roc_auc_"))
    print(f"[evaluate] {cfg.model_name} v{cand_mv.version}: {summary}", flush=True)
    print(f"[evaluate] gate: {'PROMOTED to @champion' if promote else 'not promoted'} ({reason})", flush=True)
    return {"version": cand_mv.version, "promoted": promote, "reason": reason, **metrics}


def stage_generate(cfg: PipelineConfig, rt: Runtime, model: str | None = None, rows: int | None = None,
                   seed: int | None = None, out: str | None = None,
                   conditions: dict[str, str] | None = None) -> dict:
    from gen_pipeline.generate import run_generate
    from gen_pipeline.registry import resolve

    rows = cfg.generate.rows if rows is None else rows
    if not 0 < rows <= MAX_ROWS:
        raise PipelineError(f"--rows {rows}: must be between 1 and {MAX_ROWS:,}")
    spark = rt.spark_started()  # the JVM starts while the model loads
    rt.mlflow(cfg.name)
    uri = model or f"models:/{cfg.model_name}@champion"
    mv, pyfunc = resolve(uri)
    out_path = Path(out) if out else default_output(cfg, rt, "generated")
    lineage = {"model_uri": uri, "model_name": mv.name, "model_version": mv.version, "run_id": mv.run_id}
    image = getattr(pyfunc.bundle.transformer, "kind", "table") == "image"
    if image:  # how to read the image column back
        tr = pyfunc.bundle.transformer
        lineage["image"] = {"column": "image", "dtype": "uint8", "shape": [tr.size, tr.size], "layout": "row-major",
                            "label": "condition class (null: unconditional model)", "classes": tr.classes}
    lineage = run_generate(spark(), pyfunc.bundle, rows=rows,
                           seed=cfg.generate.seed if seed is None else seed, out=out_path, lineage=lineage,
                           partition_rows=cfg.generate.rows_per_partition, conditions=conditions)
    if image:  # a PNG grid of the first rows, for a quick look
        from gen_pipeline.image_eval import preview_grid

        preview_grid(out_path, pyfunc.bundle.transformer)
    return {"generated": str(out_path), "rows": lineage["rows"], "model_version": mv.version}


def stage_score(cfg: PipelineConfig, rt: Runtime, model: str | None = None, inputs: list[str] | None = None,
                out: str | None = None) -> dict:
    from gen_pipeline.datasets import raw_table
    from gen_pipeline.registry import resolve
    from gen_pipeline.score import run_score

    spark = rt.spark_started()  # the JVM starts while the model loads
    rt.mlflow(cfg.name)
    uri = model or f"models:/{cfg.model_name}@champion"
    mv, pyfunc = resolve(uri)
    if is_image_dataset(cfg.data.dataset):  # images: gen_pipeline.image_score
        from gen_pipeline.image_score import run_image_score, score_inputs
        from gen_pipeline.images import image_source

        source = score_inputs(image_source(cfg, rt.datasets_dir), inputs, pyfunc.bundle.transformer.size)
        out_path = Path(out) if out else default_output(cfg, rt, "scored")
        lineage = {"model_uri": uri, "model_name": mv.name, "model_version": mv.version, "run_id": mv.run_id}
        lineage = run_image_score(spark(), pyfunc.bundle, source, out=out_path, lineage=lineage)
        return {"scored": str(out_path), "rows_in": lineage["rows_in"], "rows_scored": lineage["rows_scored"],
                "roc_auc_anomaly": lineage["roc_auc_anomaly"],
                "roc_auc_anomaly_neg_elbo": lineage["roc_auc_anomaly_neg_elbo"]}
    if inputs:
        paths = [Path(p) for p in inputs]
    elif cfg.data.source:  # your own table: score its files
        paths = [cfg.data.source] if isinstance(cfg.data.source, str) else list(cfg.data.source)
    else:
        paths = [raw_table(cfg.data.dataset, rt.datasets_dir).files[-1]]
    out_path = Path(out) if out else default_output(cfg, rt, "scored")
    lineage = {"model_uri": uri, "model_name": mv.name, "model_version": mv.version, "run_id": mv.run_id}
    lineage = run_score(spark(), pyfunc.bundle, inputs=paths, out=out_path, lineage=lineage)
    return {"scored": str(out_path), "rows_in": lineage["rows_in"], "rows_scored": lineage["rows_scored"]}


def run_all(cfg: PipelineConfig, rt: Runtime, rows: int | None = None, seed: int | None = None) -> dict:
    t0 = time.perf_counter()
    outputs = {"preprocess": stage_preprocess(cfg, rt), "train": stage_train(cfg, rt),
               "evaluate": stage_evaluate(cfg, rt)}
    outputs["generate"] = stage_generate(cfg, rt, rows=rows, seed=seed)
    if cfg.model.family in ("tvae", "conv_vae"):
        outputs["score"] = stage_score(cfg, rt)
    outputs["seconds"] = round(time.perf_counter() - t0, 1)
    return outputs

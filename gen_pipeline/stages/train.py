"""train (Ray Train + MLflow): the run's identity, the MLflow run, the DDP training on Ray Train
workers (``gen_pipeline.training``), the registered model version with alias ``@candidate``."""

from __future__ import annotations

from gen_pipeline.config import PipelineConfig
from gen_pipeline.kinds import kind_of
from gen_pipeline.layout import PreprocessOutput, RunLayout


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def _run_exists(client, run_id: str) -> bool:
    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except Exception:  # deleted, or logged to another tracking server
        return False


def stage_train(cfg: PipelineConfig, rt, fail_at_epoch: int | None = None) -> dict:
    from gen_pipeline.bundle import ModelBundle
    from gen_pipeline.registry import log_and_register
    from gen_pipeline.training.checkpoints import plan_run
    from gen_pipeline.training.driver import log_missing_epochs, train_on_ray

    layout = RunLayout(rt.work_dir, cfg.name)
    data = PreprocessOutput(layout.preprocess).require()
    spec, manifest = data.spec, data.manifest
    kind_of(manifest=manifest).prepare_training(data, cfg)  # e.g. the image classifier FID per epoch needs
    # The Ray Train run: the one a killed driver left unfinished (same config and data), else new.
    record = plan_run(cfg, layout.train_records, manifest["fingerprint"])
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
        record.save(layout.train_records)
        result = train_on_ray(cfg, rt, data.root, mlflow_run_id=run.info.run_id, run_name=record.name,
                              ray_storage=layout.ray_storage, fail_at_epoch=fail_at_epoch)
        backfilled = log_missing_epochs(client, run.info.run_id, result.history)
        if backfilled:
            print(f"[train] logged {backfilled} epoch(s) MLflow had missed, from the checkpoint's history", flush=True)
        mlflow.log_metric("train_seconds", result.seconds)
        if result.resumed_from:
            mlflow.set_tag("resumed_from_epochs", ",".join(map(str, result.resumed_from)))
        bundle = kind_of(manifest=manifest).finish_bundle(ModelBundle(cfg, spec, result.state_dict, manifest), cfg)
        version, uri = log_and_register(bundle, cfg.model_name)
        record.model_version = str(version)
        record.save(layout.train_records)
    print(f"[train] registered {cfg.model_name} version {version} as @candidate (run {run.info.run_id}); "
          f"checkpoints in {result.checkpoint_path}", flush=True)
    return {"model": f"models:/{cfg.model_name}@candidate", "version": version, "run_id": run.info.run_id,
            "checkpoints": result.checkpoint_path, "ray_run_name": record.name, "resumed_from": result.resumed_from,
            "epochs_trained": len(result.history)}

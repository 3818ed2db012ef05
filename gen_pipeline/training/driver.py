"""The driver side of training: Ray Train's ``TorchTrainer`` over the workers (``shell``), the
datasets handed to them, resuming a run whose driver died, and the metrics MLflow missed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from gen_pipeline.config import PipelineConfig
from gen_pipeline.kinds import kind_of
from gen_pipeline.layout import PreprocessOutput
from gen_pipeline.training.checkpoints import CHECKPOINT_FILE, latest_checkpoint, load_checkpoint
from gen_pipeline.training.shell import TrainPlan, worker_loop


def log_missing_epochs(client, run_id: str, history: list[dict[str, float]]) -> int:
    """Log the epochs of ``history`` that the run lacks (sent while MLflow was down, or by a
    driver that died); returns how many. The checkpoint's history is the record of truth."""
    from mlflow.entities import Metric

    if not history:
        return 0
    key = next(iter(history[0]))
    logged = {m.step for m in client.get_metric_history(run_id, key)}
    ts = int(time.time() * 1000)
    missing = [Metric(k, float(v), ts, step) for step, metrics in enumerate(history, start=1) if step not in logged
               for k, v in metrics.items()]
    for i in range(0, len(missing), 1000):  # MLflow's per-request limit
        client.log_batch(run_id, metrics=missing[i:i + 1000])
    return len({m.step for m in missing})



def steps_per_epoch(cfg: PipelineConfig, train_rows: int, default_min_steps: int) -> tuple[int, str]:
    """(optimizer steps per epoch for every rank, a note for the printed line).

    One pass over the train split is ``train_rows // (workers * batch_size)`` steps. An epoch is
    at least one pass, and long enough that ``train.epochs`` of them make ``train.min_steps``
    steps (None: the data kind's default, 4,000 for images, 0 for tables): a small set then
    takes several passes per epoch (the loaders start over within an epoch) instead of a few
    hundred steps in all. Every per-epoch thing (the line, MLflow metrics, the checkpoint, the
    sample grid and FID, the ETA) stays one per epoch.
    """
    one_pass = max(1, train_rows // (cfg.train.num_workers * cfg.train.batch_size))
    min_steps = default_min_steps if cfg.train.min_steps is None else cfg.train.min_steps
    steps = max(one_pass, -(-min_steps // cfg.train.epochs))
    if steps == one_pass:
        return steps, ""
    return steps, (f" ({steps / one_pass:.1f} passes over the data per epoch, {steps * cfg.train.epochs} steps: "
                   f"train.min_steps={min_steps})")


@dataclass
class TrainResult:
    state_dict: dict
    history: list[dict[str, float]]
    resumed_from: list[int]
    checkpoint_path: str
    seconds: float


_VALUE_BYTES = {"FLOAT": 4, "DOUBLE": 8, "INT32": 4, "INT64": 8, "BOOLEAN": 1}


def fits_object_store(path: Path, ray, fraction: float) -> bool:
    """Whether the Parquet files under ``path``, decoded, take at most ``fraction`` of the Ray
    cluster's object store. Decoded size from the footers: values x width for fixed-width
    columns (the encoded size can be far smaller: dictionaries, runs), else the uncompressed size."""
    import pyarrow.parquet as pq

    if fraction <= 0:
        return False
    decoded = 0
    for f in Path(path).glob("*.parquet"):
        meta = pq.ParquetFile(f).metadata
        for i in range(meta.num_row_groups):
            for j in range(meta.num_columns):
                c = meta.row_group(i).column(j)
                width = _VALUE_BYTES.get(c.physical_type)
                decoded += c.num_values * width if width else c.total_uncompressed_size
    return decoded <= fraction * ray.cluster_resources().get("object_store_memory", 0)


def train_on_ray(cfg: PipelineConfig, runtime, preprocess_dir: Path, *, mlflow_run_id: str | None,
                 run_name: str, ray_storage: Path, fail_at_epoch: int | None = None) -> TrainResult:
    """Run the DDP training on Ray Train; returns the final weights from the last checkpoint.

    A ``run_name`` whose folder already holds checkpoints (its driver died) continues from the
    newest one: Ray Train restores the run by name and storage path, and the workers load the
    newest checkpoint found on disk. A run whose every epoch is done just returns its weights.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray = runtime.ray()
    data = PreprocessOutput(Path(preprocess_dir))
    spec, manifest = data.spec, data.manifest
    train_path = data.encoded("train")
    train_rows = manifest["splits"]["train"]
    world = cfg.train.num_workers
    steps, epochs_note = steps_per_epoch(cfg, train_rows, kind_of(manifest=manifest).default_min_steps)
    t0 = time.perf_counter()
    found = latest_checkpoint(Path(ray_storage) / run_name)
    if found and found[1] >= cfg.train.epochs:
        print(f"[train] run {run_name} already trained {found[1]} epochs; using its last checkpoint", flush=True)
        ckpt, state = load_checkpoint(found[0] / CHECKPOINT_FILE)
        return TrainResult(state_dict=ckpt["model"], history=state.history, resumed_from=state.resumed_from,
                           checkpoint_path=str(found[0]), seconds=time.perf_counter() - t0)
    if found:
        print(f"[train] run {run_name}: continuing after epoch {found[1]} from {found[0]}", flush=True)
    datasets, data_config, how = None, None, ""
    if cfg.train.loader == "ray_data":
        import ray.data
        from ray.train import DataConfig

        ds = ray.data.read_parquet(str(train_path)).select_columns(["features"])
        how = " (streamed from Parquet)"
        datasets = {"train": ds}
        if fits_object_store(train_path, ray, cfg.train.ray_data_cache_fraction):
            # Decoded once and kept in the object store, then split once into equal row ranges,
            # one per rank: every epoch each worker reads its own blocks, with no split
            # coordinator between it and them (Ray Train's streaming split of a dataset runs one
            # more actor for that).
            shards = ds.materialize().split(world, equal=True)
            datasets = {f"train_{rank}": shard for rank, shard in enumerate(shards)}
            data_config = DataConfig(datasets_to_split=[])
            how = " (cached in the object store)"
    plan = TrainPlan(config=cfg, spec=spec, preprocess_dir=str(data.root), steps_per_epoch=steps,
                     split_per_rank=data_config is not None, tracking_uri=runtime.tracking_uri,
                     mlflow_run_id=mlflow_run_id, resume_path=str(found[0]) if found else None,
                     resume_epoch=found[1] if found else 0, fail_at_epoch=fail_at_epoch)
    print(f"[train] {cfg.model.family} on {world} Ray Train worker(s), loader={cfg.train.loader}{how}, "
          f"{train_rows} rows, {steps} steps/epoch x {cfg.train.epochs} epochs{epochs_note}", flush=True)
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"plan": plan},
        scaling_config=ScalingConfig(num_workers=world, use_gpu=cfg.train.use_gpu,
                                     resources_per_worker={"CPU": cfg.train.cpus_per_worker}),
        run_config=RunConfig(
            name=run_name, storage_path=str(ray_storage),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.checkpoints_to_keep),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
        ),
        datasets=datasets,
        dataset_config=data_config,
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    with result.checkpoint.as_directory() as d:
        ckpt, state = load_checkpoint(Path(d) / CHECKPOINT_FILE)
    return TrainResult(state_dict=ckpt["model"], history=state.history, resumed_from=state.resumed_from,
                       checkpoint_path=result.checkpoint.path, seconds=time.perf_counter() - t0)

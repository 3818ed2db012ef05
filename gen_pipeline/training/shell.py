"""The Ray Train worker shell: short, as in Ray Train's own examples. Fed a typed ``TrainPlan``,
each worker builds the model, restores a checkpoint, wraps the model for DDP, gets its shard of
the batches and runs the plain loop (``training.loop.fit``); rank 0 checkpoints every epoch and
logs metrics and the kind's pictures to MLflow, retrying with a bound so tracking never costs a
training run."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from gen_pipeline.config import PipelineConfig
from gen_pipeline.kinds import kind_of
from gen_pipeline.layout import PreprocessOutput
from gen_pipeline.models import build_model
from gen_pipeline.training.checkpoints import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from gen_pipeline.training.loaders import BatchSource
from gen_pipeline.training.loop import FitState, fit


def _log_with_retry(log: Callable[[], None], epoch: int, tries: int = 4, first_wait: float = 1.0) -> bool:
    """Tracking is not worth a training run: retry with backoff, then warn and go on (the
    checkpoints still hold every epoch's metrics in their history)."""
    wait = first_wait
    for attempt in range(1, tries + 1):
        try:
            log()
            return True
        except Exception as e:  # MLflow's client raises several types for an unreachable server
            if attempt == tries:
                print(f"[train] warning: could not log epoch {epoch} metrics to MLflow after {tries} tries "
                      f"({type(e).__name__}); training goes on, metrics stay in the checkpoint", flush=True)
                return False
            time.sleep(wait)
            wait *= 2
    return False


def _dies_mid_epoch(batches: BatchSource, epoch_1based: int) -> BatchSource:
    """Fault injection for tests: this worker process dies halfway into the given epoch."""
    def wrapped(epoch: int):
        for i, batch in enumerate(batches(epoch)):
            if epoch + 1 == epoch_1based and i == 2:
                time.sleep(2.0)  # let the controller register the previous epoch's checkpoint
                os._exit(1)
            yield batch
    return wrapped


def bf16_autocast(cfg: PipelineConfig, kind, device: torch.device) -> bool:
    """Whether the train steps run under bf16 autocast: ``train.precision`` on a GPU;
    ``train.cpu_precision`` (else the data kind's default) on a CPU with native bf16 instructions
    (oneDNN's own check), float32 on one without, where bf16 would be emulated and slower."""
    if device.type == "cuda":
        return cfg.train.precision == "bf16"
    if (cfg.train.cpu_precision or kind.default_cpu_precision) != "bf16":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def _quiet_ray_train_logs(level: int) -> None:
    import logging

    logging.getLogger("ray.train").setLevel(level)
    try:  # Ray Train V2 names these loggers by file path, so the package logger misses them
        from ray.train.v2._internal.execution import context, storage

        for module in (context, storage):
            logging.getLogger(module.__file__).setLevel(level)
    except ImportError:
        pass


@dataclass(frozen=True)
class TrainPlan:
    """What every Ray Train worker is told by the driver: typed, decided once."""

    config: PipelineConfig
    spec: dict  # the preprocess output's transform spec
    preprocess_dir: str
    steps_per_epoch: int
    split_per_rank: bool  # ray_data: each rank has its own dataset split ("train_<rank>")
    tracking_uri: str
    mlflow_run_id: str | None = None
    resume_path: str | None = None  # a newer checkpoint the driver found on disk (its predecessor died)
    resume_epoch: int = 0
    fail_at_epoch: int | None = None  # tests: the last rank dies halfway into this epoch


def open_batches(plan: TrainPlan, rank: int, world: int, device: torch.device):
    """This rank's batch source for the configured loader, and how to close it."""
    t = plan.config.train
    train_path = PreprocessOutput(Path(plan.preprocess_dir)).encoded("train")
    if t.loader == "petastorm":
        from gen_pipeline.training.loaders import petastorm_source

        source = petastorm_source(train_path, rank, world, t.batch_size, t.seed)
        return source, source.close  # stops the reader that runs ahead into the next epoch
    if t.loader == "memory":
        from gen_pipeline.training.loaders import memory_source, read_features

        # On a GPU the table goes to the device once, so a step never waits for a host copy.
        return memory_source(read_features(train_path).to(device), rank, world, t.batch_size, t.seed), None
    from gen_pipeline.training.loaders import ray_data_source

    name = f"train_{rank}" if plan.split_per_rank else "train"  # its own split, or its streaming shard
    return ray_data_source(t.batch_size, t.seed, name, device=device, rank=rank), None


def worker_loop(config: dict) -> None:
    """``train_loop_per_worker``: build the model, restore, wrap it for DDP, get this rank's
    batches, run ``fit``; rank 0 checkpoints, logs each epoch and the kind's pictures."""
    import logging

    import ray.train
    import ray.train.torch

    plan: TrainPlan = config["plan"]
    cfg = plan.config
    _quiet_ray_train_logs(logging.WARNING)  # the one line per epoch is ours to print
    torch.set_flush_denormal(True)  # CPU MLPs slow down several-fold on denormals (STACK.md)
    kind = kind_of(spec=plan.spec)
    transformer = kind.transformer(plan.spec)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, transformer.spans, transformer.output_dim)
    device = ray.train.torch.get_device()
    autocast = bf16_autocast(cfg, kind, device)
    if rank == 0:
        backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "none"
        how = "bf16 autocast" if autocast else "float32"
        name = f"{torch.cuda.get_device_name(device)}, " if device.type == "cuda" else ""
        print(f"[train] {world} worker(s) on {device.type} ({name}{how}), process group: {backend}", flush=True)
    model.to(device)
    model.configure_optimizers(cfg.train.lr, cfg.train.weight_decay)

    state = FitState()
    checkpoint = ray.train.get_checkpoint()  # this run's group restarted after a worker died
    if checkpoint:
        with checkpoint.as_directory() as d:
            _, state = load_checkpoint(Path(d) / CHECKPOINT_FILE, model)
    if plan.resume_path and plan.resume_epoch > state.start_epoch:
        _, state = load_checkpoint(Path(plan.resume_path) / CHECKPOINT_FILE, model)
    resumed = state.start_epoch > 0
    if resumed:
        state.resumed_from.append(state.start_epoch)
        print(f"[train] rank {rank}: resumed from checkpoint at epoch {state.start_epoch}", flush=True)

    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        model.distribute(lambda m: DDP(m, device_ids=ids))

    batches, close = open_batches(plan, rank, world, device)
    if plan.fail_at_epoch and rank == world - 1 and not resumed:
        batches = _dies_mid_epoch(batches, plan.fail_at_epoch)

    client, tracking_down = None, False
    if rank == 0 and plan.mlflow_run_id:
        from mlflow.tracking import MlflowClient

        # One HTTP attempt per try: the backoff below is ours and bounded (MLflow's own client
        # would retry for minutes while every other rank waits at the next all-reduce).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        client = MlflowClient(plan.tracking_uri)
    data = PreprocessOutput(Path(plan.preprocess_dir))

    def log_pictures(epoch: int) -> None:
        with tempfile.TemporaryDirectory() as d:
            files, extra = kind.epoch_pictures(model, transformer, data, epoch, Path(d))
            for f in files:
                client.log_artifact(plan.mlflow_run_id, str(f), "samples")
            for k, v in extra.items():
                client.log_metric(plan.mlflow_run_id, k, v, step=epoch)

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        nonlocal tracking_down
        if client is not None:
            from mlflow.entities import Metric

            ts = int(time.time() * 1000)
            batch = [Metric(k, float(v), ts, epoch + 1) for k, v in metrics.items()]
            # Once the server is known to be down, one try per epoch until it answers; the
            # driver logs whatever was missed from the checkpoint's history at the end.
            tracking_down = not _log_with_retry(lambda: client.log_batch(plan.mlflow_run_id, metrics=batch),
                                                epoch + 1, tries=1 if tracking_down else 4)
            _log_with_retry(lambda: log_pictures(epoch + 1), epoch + 1, tries=1)  # the kind's per-epoch pictures
        report = {**metrics, "epoch": epoch + 1}
        if rank == 0:
            with tempfile.TemporaryDirectory() as d:
                save_checkpoint(Path(d) / CHECKPOINT_FILE, model, state)
                ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(report)

    try:
        fit(model, batches, epochs=cfg.train.epochs, steps_per_epoch=plan.steps_per_epoch,
            batch_rows=cfg.train.batch_size * world, device=device, state=state,
            on_epoch_end=on_epoch_end, log=(lambda s: print(s, flush=True)) if rank == 0 else None,
            autocast=autocast, seed=cfg.train.seed * 1000 + rank)
    finally:
        if close:
            close()

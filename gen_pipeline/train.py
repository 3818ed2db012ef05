"""The training loop, written once, and the Ray Train shell around it.

``fit`` is a plain function over a model and any source of batches; every model family brings
its own ``train_step``. ``train_on_ray`` runs ``fit`` on each Ray Train worker (DDP), checkpoints
every epoch and has rank 0 log per-epoch metrics to MLflow.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from gen_pipeline.config import PipelineConfig
from gen_pipeline.errors import PipelineError
from gen_pipeline.loaders import BatchSource
from gen_pipeline.models import GenerativeModel, build_model
from gen_pipeline.images import transformer_for
from gen_pipeline.transforms import TableTransformer

CHECKPOINT_FILE = "checkpoint.pt"
EpochHook = Callable[[int, dict[str, float]], None]


@dataclass
class FitState:
    start_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: list[int] = field(default_factory=list)  # epochs a restarted run resumed at


_NOT_LOSSES = ("samples_per_s", "epoch_seconds", "gpu_peak_mib")


def _fmt_seconds(s: float) -> str:
    return f"{int(s // 60)}m{int(s % 60):02d}s"


def fit(model: GenerativeModel, batches: BatchSource, *, epochs: int, steps_per_epoch: int,
        batch_rows: int, device: torch.device, state: FitState | None = None,
        on_epoch_end: EpochHook | None = None, log: Callable[[str], None] | None = print,
        autocast: bool = False, seed: int | None = None) -> FitState:
    """Train ``model`` for ``epochs`` epochs of exactly ``steps_per_epoch`` steps each.

    Every rank runs the same number of steps (uneven shards would hang DDP): a short shard
    starts over. Prints one line per epoch with losses, samples/s, elapsed and ETA. With
    ``seed``, torch's RNG is reseeded from (seed, epoch) as each epoch starts, so a run resumed
    from a checkpoint draws the same noise as one that never stopped.
    """
    state = state or FitState()
    start, first_epoch = time.perf_counter(), state.start_epoch
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed batch shapes: let cuDNN time its conv kernels once
    model.train()
    for epoch in range(first_epoch, epochs):
        t0 = time.perf_counter()
        if seed is not None:
            torch.manual_seed(seed * 1_000_003 + epoch)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        sums: dict[str, torch.Tensor] = {}
        source = itertools.chain.from_iterable(batches(epoch) for _ in itertools.count())
        for _, batch in zip(range(steps_per_epoch), source):
            if cuda and not batch.is_cuda:
                batch = batch.pin_memory()  # page-locked, so the copy below runs asynchronously
            batch = batch.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                metrics = model.train_step(batch)
            for k, v in metrics.items():  # summed on the device: no wait for the GPU per step
                sums[k] = sums[k] + v if k in sums else v
        metrics = {k: float(v) / steps_per_epoch for k, v in sums.items()}  # waits for the last step
        seconds = time.perf_counter() - t0
        metrics["samples_per_s"] = steps_per_epoch * batch_rows / seconds
        metrics["epoch_seconds"] = seconds
        if cuda:
            metrics["gpu_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        state.history.append(metrics)
        state.start_epoch = epoch + 1
        if log:
            elapsed = time.perf_counter() - start
            eta = elapsed / (epoch + 1 - first_epoch) * (epochs - epoch - 1)
            losses = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k not in _NOT_LOSSES)
            gpu = f" gpu_peak={metrics['gpu_peak_mib']:.0f}MiB" if cuda else ""
            log(f"[train] epoch {epoch + 1}/{epochs} {losses} samples/s={metrics['samples_per_s']:.0f}{gpu} "
                f"elapsed={_fmt_seconds(elapsed)} eta={_fmt_seconds(eta)}")
        if on_epoch_end:
            on_epoch_end(epoch, metrics)
    if hasattr(batches, "close"):
        batches.close()  # a source reading ahead into the next epoch stops
    return state


# ---------------------------------------------------------------------------------------------
# Checkpoints: tensors and plain values only, so loading never unpickles arbitrary objects.
# ---------------------------------------------------------------------------------------------
def save_checkpoint(path: Path, model: GenerativeModel, state: FitState) -> None:
    torch.save({
        "model": model.state_dict(),
        "optimizers": model.optimizer_state(),
        "epoch": state.start_epoch,
        "history": state.history,
        "resumed_from": state.resumed_from,
        "rng": torch.get_rng_state(),
    }, path)


def load_checkpoint(path: Path, model: GenerativeModel | None = None) -> tuple[dict, FitState]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if model is not None:
        model.load_state_dict(ckpt["model"])
        model.load_optimizer_state(ckpt["optimizers"])
        torch.set_rng_state(ckpt["rng"])
    return ckpt, FitState(start_epoch=int(ckpt["epoch"]), history=list(ckpt["history"]),
                          resumed_from=list(ckpt["resumed_from"]))


def latest_checkpoint(run_dir: Path) -> tuple[Path, int] | None:
    """The folder and epoch of the newest readable checkpoint a run wrote, if any.

    Read from disk rather than from Ray's run snapshot: a checkpoint is on disk once its
    ``ray.train.report`` returned, while the snapshot lags by up to a controller poll, so a
    driver killed in between would otherwise lose one more epoch. A file cut short by the
    kill does not load and is skipped.
    """
    found = []
    for f in run_dir.glob(f"checkpoint_*/{CHECKPOINT_FILE}"):
        try:
            found.append((int(torch.load(f, map_location="cpu", weights_only=True)["epoch"]), f.parent))
        except Exception:  # a partial write from a killed run
            continue
    if not found:
        return None
    epoch, folder = max(found, key=lambda t: (t[0], t[1].stat().st_mtime))
    return folder, epoch


@dataclass
class RunRecord:
    """What the driver remembers of a Ray Train run, so that a restarted driver finds it again."""

    name: str  # RunConfig(name=...): the folder under the Ray storage path
    mlflow_run_id: str | None = None
    model_version: str | None = None  # set once the model is registered: the run is finished

    def save(self, runs_dir: Path) -> None:
        runs_dir.mkdir(parents=True, exist_ok=True)
        tmp = runs_dir / f".{self.name}.json.tmp"
        tmp.write_text(json.dumps(self.__dict__))
        tmp.replace(runs_dir / f"{self.name}.json")  # never a half-written record

    @classmethod
    def load(cls, runs_dir: Path, name: str) -> "RunRecord | None":
        path = runs_dir / f"{name}.json"
        return cls(**json.loads(path.read_text())) if path.is_file() else None


def training_key(cfg: PipelineConfig, data_fingerprint: str) -> str:
    """A digest of everything that decides the training (not evaluate/generate settings)."""
    what = cfg.model_dump(mode="json", exclude={"evaluate", "generate"})
    what["train"].pop("run_name", None)
    return hashlib.sha1(json.dumps([what, data_fingerprint], sort_keys=True).encode()).hexdigest()[:10]


def plan_run(cfg: PipelineConfig, runs_dir: Path, data_fingerprint: str) -> RunRecord:
    """The Ray Train run a ``train`` call works on.

    ``train.run_name`` if given; else ``<name>-<training key>-<n>`` with the first ``n`` whose
    run has not registered a model yet: a run whose driver died is picked up again (same
    config, same data), a finished one is never touched and the next call trains anew.
    """
    if cfg.train.run_name:
        record = RunRecord.load(runs_dir, cfg.train.run_name) or RunRecord(cfg.train.run_name)
        if record.model_version is not None:
            raise PipelineError(f"train.run_name={cfg.train.run_name}: that run already finished and registered "
                                f"version {record.model_version}; give a new name to train again")
        return record
    base = f"{cfg.name}-{training_key(cfg, data_fingerprint)}"
    for n in itertools.count(1):
        record = RunRecord.load(runs_dir, f"{base}-{n}")
        if record is None:
            return RunRecord(f"{base}-{n}")
        if record.model_version is None:
            return record
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# Ray Train shell
# ---------------------------------------------------------------------------------------------
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


def _dies_mid_epoch(batches: BatchSource, epoch_1based: int) -> BatchSource:
    """Fault injection for tests: this worker process dies halfway into the given epoch."""
    def wrapped(epoch: int):
        for i, batch in enumerate(batches(epoch)):
            if epoch + 1 == epoch_1based and i == 2:
                time.sleep(2.0)  # let the controller register the previous epoch's checkpoint
                os._exit(1)
            yield batch
    return wrapped


def _quiet_ray_train_logs(level: int) -> None:
    import logging

    logging.getLogger("ray.train").setLevel(level)
    try:  # Ray Train V2 names these loggers by file path, so the package logger misses them
        from ray.train.v2._internal.execution import context, storage

        for module in (context, storage):
            logging.getLogger(module.__file__).setLevel(level)
    except ImportError:
        pass


def _worker_loop(loop_cfg: dict) -> None:
    """``train_loop_per_worker``: build the model, open this rank's loader, call ``fit``."""
    import logging

    import ray.train
    import ray.train.torch

    _quiet_ray_train_logs(logging.WARNING)  # the one line per epoch is ours to print
    torch.set_flush_denormal(True)  # CPU MLPs slow down several-fold on denormals (STACK.md)
    cfg = PipelineConfig.model_validate(loop_cfg["config"])
    transformer = transformer_for(loop_cfg["spec"])  # a table or an image set
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, transformer.spans, transformer.output_dim)
    device = ray.train.torch.get_device()
    if rank == 0:
        backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "none"
        how = "bf16 autocast" if cfg.train.precision == "bf16" else "float32"
        name = f" ({torch.cuda.get_device_name(device)}, {how})" if device.type == "cuda" else ""
        print(f"[train] {world} worker(s) on {device.type}{name}, process group: {backend}", flush=True)
    model.to(device)
    model.configure_optimizers(cfg.train.lr, cfg.train.weight_decay)

    state = FitState()
    checkpoint = ray.train.get_checkpoint()  # this run's group restarted after a worker died
    if checkpoint:
        with checkpoint.as_directory() as d:
            _, state = load_checkpoint(Path(d) / CHECKPOINT_FILE, model)
    found = loop_cfg.get("resume")  # a newer one the driver found on disk (its predecessor died)
    if found and found["epoch"] > state.start_epoch:
        _, state = load_checkpoint(Path(found["path"]) / CHECKPOINT_FILE, model)
    resumed = state.start_epoch > 0
    if resumed:
        state.resumed_from.append(state.start_epoch)
        print(f"[train] rank {rank}: resumed from checkpoint at epoch {state.start_epoch}", flush=True)

    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        model.distribute(lambda m: DDP(m, device_ids=ids))

    if cfg.train.loader == "petastorm":
        from gen_pipeline.loaders import petastorm_source

        batches = petastorm_source(loop_cfg["train_path"], rank, world, cfg.train.batch_size, cfg.train.seed)
    elif cfg.train.loader == "memory":
        from gen_pipeline.loaders import memory_source, read_features

        # On a GPU the table goes to the device once, so a step never waits for a host copy.
        batches = memory_source(read_features(loop_cfg["train_path"]).to(device), rank, world,
                                cfg.train.batch_size, cfg.train.seed)
    else:
        from gen_pipeline.loaders import ray_data_source

        name = f"train_{rank}" if loop_cfg["split_per_rank"] else "train"  # its own split, or its streaming shard
        batches = ray_data_source(cfg.train.batch_size, cfg.train.seed, name, device=device, rank=rank)

    fail_at = loop_cfg.get("fail_at_epoch")
    if fail_at and rank == world - 1 and not resumed:
        batches = _dies_mid_epoch(batches, fail_at)

    client, tracking_down = None, False
    if rank == 0 and loop_cfg.get("mlflow_run_id"):
        from mlflow.tracking import MlflowClient

        # One HTTP attempt per try: the backoff below is ours and bounded (MLflow's own client
        # would retry for minutes while every other rank waits at the next all-reduce).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        client = MlflowClient(loop_cfg["tracking_uri"])

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        nonlocal tracking_down
        if client is not None:
            from mlflow.entities import Metric

            ts = int(time.time() * 1000)
            batch = [Metric(k, float(v), ts, epoch + 1) for k, v in metrics.items()]
            # Once the server is known to be down, one try per epoch until it answers; the
            # driver logs whatever was missed from the checkpoint's history at the end.
            tracking_down = not _log_with_retry(lambda: client.log_batch(loop_cfg["mlflow_run_id"], metrics=batch),
                                                epoch + 1, tries=1 if tracking_down else 4)
            if getattr(transformer, "kind", "table") == "image":  # a sample grid (and FID) per epoch
                from gen_pipeline.image_eval import log_epoch_images

                _log_with_retry(lambda: log_epoch_images(client, loop_cfg, model, transformer, epoch + 1),
                                epoch + 1, tries=1)
        report = {**metrics, "epoch": epoch + 1}
        if rank == 0:
            with tempfile.TemporaryDirectory() as d:
                save_checkpoint(Path(d) / CHECKPOINT_FILE, model, state)
                ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(report)

    fit(model, batches, epochs=cfg.train.epochs, steps_per_epoch=loop_cfg["steps_per_epoch"],
        batch_rows=cfg.train.batch_size * world, device=device, state=state,
        on_epoch_end=on_epoch_end, log=(lambda s: print(s, flush=True)) if rank == 0 else None,
        autocast=device.type == "cuda" and cfg.train.precision == "bf16", seed=cfg.train.seed * 1000 + rank)


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


IMAGE_MIN_STEPS = 3000  # train.min_steps when unset, for the image families (see TrainConfig)


def steps_per_epoch(cfg: PipelineConfig, train_rows: int) -> tuple[int, str]:
    """(optimizer steps per epoch for every rank, a note for the printed line).

    One pass over the train split is ``train_rows // (workers * batch_size)`` steps. An epoch is
    at least one pass, and long enough that ``train.epochs`` of them make ``train.min_steps``
    steps: a small set then takes several passes per epoch (the loaders start over within an
    epoch) instead of a few hundred steps in all. Every per-epoch thing (the line, MLflow
    metrics, the checkpoint, the sample grid and FID, the ETA) stays one per epoch.
    """
    one_pass = max(1, train_rows // (cfg.train.num_workers * cfg.train.batch_size))
    min_steps = cfg.train.min_steps
    if min_steps is None:
        min_steps = IMAGE_MIN_STEPS if cfg.model.family in ("dcgan", "conv_vae") else 0
    steps = max(one_pass, -(-min_steps // cfg.train.epochs))
    if steps == one_pass:
        return steps, ""
    return steps, (f" ({steps / one_pass:.1f} passes over the data per epoch, {steps * cfg.train.epochs} steps: "
                   f"train.min_steps={min_steps})")


def train_on_ray(cfg: PipelineConfig, runtime, preprocess_dir: Path, *, mlflow_run_id: str | None,
                 run_name: str, fail_at_epoch: int | None = None) -> TrainResult:
    """Run the DDP training on Ray Train; returns the final weights from the last checkpoint.

    A ``run_name`` whose folder already holds checkpoints (its driver died) continues from the
    newest one: Ray Train restores the run by name and storage path, and the workers load the
    newest checkpoint found on disk. A run whose every epoch is done just returns its weights.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray = runtime.ray()
    spec = json.loads((preprocess_dir / "transform_spec.json").read_text())
    manifest = json.loads((preprocess_dir / "manifest.json").read_text())
    train_path = preprocess_dir / "encoded" / "train"
    train_rows = manifest["splits"]["train"]
    world = cfg.train.num_workers
    steps, epochs_note = steps_per_epoch(cfg, train_rows)
    t0 = time.perf_counter()
    found = latest_checkpoint(Path(runtime.ray_storage) / run_name)
    if found and found[1] >= cfg.train.epochs:
        print(f"[train] run {run_name} already trained {found[1]} epochs; using its last checkpoint", flush=True)
        ckpt, state = load_checkpoint(found[0] / CHECKPOINT_FILE)
        return TrainResult(state_dict=ckpt["model"], history=state.history, resumed_from=state.resumed_from,
                           checkpoint_path=str(found[0]), seconds=time.perf_counter() - t0)
    if found:
        print(f"[train] run {run_name}: continuing after epoch {found[1]} from {found[0]}", flush=True)
    loop_cfg = {
        "config": cfg.model_dump(mode="json"), "spec": spec, "train_path": str(train_path),
        "steps_per_epoch": steps, "tracking_uri": runtime.tracking_uri,
        "mlflow_run_id": mlflow_run_id, "fail_at_epoch": fail_at_epoch,
        "resume": {"path": str(found[0]), "epoch": found[1]} if found else None,
    }
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
            # more actor for that, which took 7% of a core here).
            shards = ds.materialize().split(world, equal=True)
            datasets = {f"train_{rank}": shard for rank, shard in enumerate(shards)}
            data_config = DataConfig(datasets_to_split=[])
            how = " (cached in the object store)"
    loop_cfg["split_per_rank"] = data_config is not None
    print(f"[train] {cfg.model.family} on {world} Ray Train worker(s), loader={cfg.train.loader}{how}, "
          f"{train_rows} rows, {steps} steps/epoch x {cfg.train.epochs} epochs{epochs_note}", flush=True)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=loop_cfg,
        scaling_config=ScalingConfig(num_workers=world, use_gpu=cfg.train.use_gpu,
                                     resources_per_worker={"CPU": cfg.train.cpus_per_worker}),
        run_config=RunConfig(
            name=run_name, storage_path=str(runtime.ray_storage),
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

"""The training loop, written once for every family: a plain function over a model and any
source of batches. Each family brings its own ``train_step``; this owns epochs, devices, the
per-epoch line and the hook that checkpoints and logs."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from gen_pipeline.models.base import GenerativeModel
from gen_pipeline.training.loaders import BatchSource

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
    return state

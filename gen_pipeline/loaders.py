"""Batch sources for training over the encoded Parquet, one interface for every loader.

Each ``*_source`` returns ``epoch -> iterable of (B, D) float32 tensors`` for this rank.
petastorm reads its own shard of the row groups (``cur_shard=rank``); Ray Data takes the shard
Ray Train hands this worker; memory reads the table once and strides over it. Only the numeric
``features`` column ever reaches torch.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Iterable

import torch

FEATURES = "features"
BatchSource = Callable[[int], Iterable[torch.Tensor]]


def prefetched(batches: BatchSource, depth: int = 4) -> BatchSource:
    """Run a source in a background thread, ``depth`` batches ahead of the training step.

    For petastorm, whose reader turns each row group's list column into a matrix row by row
    (``np.vstack`` in ``ArrowReaderWorker.read_next``) on the consuming thread: here that work
    overlaps the step instead of adding to it. A consumer that stops early stops the thread.
    """
    import queue
    import threading

    done = object()

    def epoch_batches(epoch: int) -> Iterable[torch.Tensor]:
        q: queue.Queue = queue.Queue(maxsize=depth)
        stop = threading.Event()

        def produce() -> None:
            try:
                for batch in batches(epoch):
                    while not stop.is_set():
                        try:
                            q.put(batch, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(done)
            except BaseException as e:  # re-raised on the training thread
                q.put(e)

        thread = threading.Thread(target=produce, name=f"prefetch-epoch-{epoch}", daemon=True)
        thread.start()
        try:
            while (item := q.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join(timeout=30)

    return epoch_batches


def petastorm_source(path: str | Path, rank: int, world: int, batch_size: int, seed: int) -> BatchSource:
    from petastorm import make_batch_reader
    from petastorm.pytorch import BatchedDataLoader

    url = "file://" + str(Path(path).resolve())  # as_uri() would escape characters petastorm keeps

    def epoch_batches(epoch: int) -> Iterable[torch.Tensor]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with make_batch_reader(url, schema_fields=[FEATURES], cur_shard=rank, shard_count=world,
                                   num_epochs=1, shuffle_row_groups=True, seed=seed + epoch,
                                   workers_count=1, reader_pool_type="thread") as reader:
                loader = BatchedDataLoader(reader, batch_size=batch_size,
                                           shuffling_queue_capacity=4 * batch_size)
                for batch in loader:
                    yield batch[FEATURES].float()

    return prefetched(epoch_batches)


def ray_data_source(batch_size: int, seed: int, dataset_name: str = "train", pin_memory: bool = False) -> BatchSource:
    """``pin_memory`` (on CUDA): Ray Data's prefetch thread pins each batch and copies it to
    the worker's device, overlapping the copy with the training step."""
    import ray.train

    shard = ray.train.get_dataset_shard(dataset_name)

    def epoch_batches(epoch: int) -> Iterable[torch.Tensor]:
        for batch in shard.iter_torch_batches(batch_size=batch_size, dtypes=torch.float32,
                                              local_shuffle_buffer_size=4 * batch_size,
                                              local_shuffle_seed=seed + epoch, drop_last=False,
                                              pin_memory=pin_memory, prefetch_batches=4):
            yield batch[FEATURES]

    return epoch_batches


def read_features(path: str | Path) -> torch.Tensor:
    """The whole ``features`` column of an encoded Parquet folder as one (N, D) float32 tensor."""
    import numpy as np
    import pyarrow.dataset as ds

    table = ds.dataset(str(path), format="parquet").to_table(columns=[FEATURES])
    col = table.column(FEATURES).combine_chunks()  # list<float32>, every list of length D
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return torch.from_numpy(np.array(flat.reshape(len(col), -1), dtype=np.float32))  # a writable copy


def memory_source(data: torch.Tensor, rank: int, world: int, batch_size: int, seed: int) -> BatchSource:
    """Tensors already in memory (the baseline and unit tests): a strided shard, reshuffled per epoch."""
    shard = data[rank::world]

    def epoch_batches(epoch: int) -> Iterable[torch.Tensor]:
        g = torch.Generator().manual_seed(seed + epoch)
        shuffled = shard[torch.randperm(shard.shape[0], generator=g)]  # one gather per epoch
        for i in range(0, shard.shape[0], batch_size):
            yield shuffled[i:i + batch_size]

    return epoch_batches

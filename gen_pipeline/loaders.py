"""Batch sources for training over the encoded Parquet, one interface for every loader.

Each ``*_source`` returns ``epoch -> iterable of (B, D) float32 tensors`` for this rank.
petastorm reads its own shard of the row groups (``cur_shard=rank``); Ray Data reads this rank's
split of the cached dataset, or its streaming shard of one read from Parquet every epoch; memory
reads the table once and strides over it. Only the numeric ``features`` column ever reaches torch.
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

    For petastorm, whose loader does its work on the consuming thread (waiting for the next row
    group, copying it into its shuffling buffer, gathering each batch): here that work overlaps
    the step instead of adding to it. A consumer that stops early stops the thread.
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
                _matrix_by_arrow(reader)
                loader = BatchedDataLoader(reader, batch_size=batch_size,
                                           shuffling_queue_capacity=4 * batch_size)
                for batch in loader:
                    yield batch[FEATURES].float()

    return prefetched(epoch_batches)


class _ArrowMatrixResults:
    """petastorm's results reader for ``make_batch_reader``, with the ``features`` list column
    made a matrix by Arrow, without a per-row step.

    petastorm 0.12.1 (pinned, STACK.md) turns each row group's list column into one numpy array
    per row (``to_pandas``) and stacks them (``np.vstack``): about 0.3 s of GIL-holding Python
    per 200k rows, on the thread the training step needs. Here the same matrix is a view of the
    Arrow buffer (``arrow_features``). The reader calls ``read_next`` on whatever object it holds
    as its results reader; ``_matrix_by_arrow`` swaps ours in, and leaves any other petastorm's
    reader as it is.
    """

    batched_output = True

    def read_next(self, workers_pool, schema, ngram):
        from petastorm.workers_pool import EmptyResultError

        try:
            table = workers_pool.get_results()
        except EmptyResultError:
            raise StopIteration from None
        return schema.make_namedtuple(**{FEATURES: _features_numpy(table)})


def _matrix_by_arrow(reader) -> None:
    if type(getattr(reader, "_results_queue_reader", None)).__name__ == "ArrowReaderWorkerResultsQueueReader":
        reader._results_queue_reader = _ArrowMatrixResults()


def ray_data_source(batch_size: int, seed: int, dataset_name: str = "train", device: torch.device | None = None,
                    rank: int = 0) -> BatchSource:
    """This Ray Train worker's iterator over the dataset ``dataset_name`` (its own split, or its
    streaming shard of a split dataset): see ``windowed_batches``."""
    import ray.train

    return windowed_batches(ray.train.get_dataset_shard(dataset_name), batch_size, seed, rank, device=device)


def windowed_batches(iterator, batch_size: int, seed: int, rank: int = 0, window: int = 16,
                     device: torch.device | None = None) -> BatchSource:
    """Batches from a Ray Data iterator (a dataset's ``iterator()`` or a Train worker's shard),
    shuffled per epoch within windows.

    Ray Data hands over ``window`` batches' worth of rows at a time as one Arrow table (its
    prefetch threads read ahead); the ``features`` list column becomes one (W, D) tensor without
    a per-row step, one permutation seeded by (seed, epoch, rank) shuffles the window, and the
    batches are slices of it. Ray's ``iter_torch_batches`` with a local shuffle buffer did the
    same work per batch and delivered 1.5-2x fewer rows/s on this machine. The order is not
    reproducible run to run: Ray Data's reads finish, and its streaming split hands out blocks,
    in whatever order the tasks run (the memory loader is the one whose order is a function of
    (seed, epoch, rank), for the tests that need it). On a CUDA ``device`` each window is pinned
    and copied to the GPU in one asynchronous transfer, and shuffled there: a training step
    never waits for a host copy of its batch.
    """
    cuda = device is not None and device.type == "cuda"

    def epoch_batches(epoch: int) -> Iterable[torch.Tensor]:
        g = torch.Generator().manual_seed((seed + epoch) * 1_000_003 + rank)
        for table in iterator.iter_batches(batch_size=window * batch_size, batch_format="pyarrow",
                                           prefetch_batches=2):
            rows = arrow_features(table)
            perm = torch.randperm(rows.shape[0], generator=g)
            if cuda:
                rows = rows.pin_memory().to(device, non_blocking=True)
                perm = perm.to(device, non_blocking=True)
            rows = rows[perm]  # one gather per window
            for i in range(0, rows.shape[0], batch_size):
                yield rows[i:i + batch_size]

    return epoch_batches


def _features_numpy(table):
    """The ``features`` column (list<float32>, every list of length D) as an (N, D) float32
    array, a read-only view of the Arrow buffer where it can be."""
    import numpy as np

    col = table.column(FEATURES).combine_chunks()
    flat = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1)
    return flat if flat.dtype == np.float32 else flat.astype(np.float32)


def arrow_features(table) -> torch.Tensor:
    """The ``features`` column (list<float32>, every list of length D) as an (N, D) tensor,
    sharing the Arrow buffer where it can (read-only: index it, do not write to it)."""
    with warnings.catch_warnings():  # torch warns that the Arrow buffer is not writable
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(_features_numpy(table))


def read_features(path: str | Path) -> torch.Tensor:
    """The whole ``features`` column of an encoded Parquet folder as one (N, D) float32 tensor."""
    import pyarrow.dataset as ds

    table = ds.dataset(str(path), format="parquet").to_table(columns=[FEATURES])
    return arrow_features(table).clone()  # a writable copy


def memory_source(data: torch.Tensor, rank: int, world: int, batch_size: int, seed: int) -> BatchSource:
    """Tensors already in memory (the baseline and unit tests): a strided shard, reshuffled per epoch."""
    shard = data[rank::world]

    def epoch_batches(epoch: int) -> Iterable[torch.Tensor]:
        g = torch.Generator().manual_seed(seed + epoch)
        shuffled = shard[torch.randperm(shard.shape[0], generator=g)]  # one gather per epoch
        for i in range(0, shard.shape[0], batch_size):
            yield shuffled[i:i + batch_size]

    return epoch_batches

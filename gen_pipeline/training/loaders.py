"""Batch sources for training over the encoded Parquet, one interface for every loader.

Each ``*_source`` returns ``epoch -> iterable of (B, D) float32 tensors`` for this rank.
petastorm reads its own shard of the row groups (``cur_shard=rank``); Ray Data reads this rank's
split of the cached dataset, or its streaming shard of one read from Parquet every epoch; memory
reads the table once and strides over it. Only the numeric ``features`` column ever reaches torch.
"""

from __future__ import annotations

import queue
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterable

import torch

FEATURES = "features"
BatchSource = Callable[[int], Iterable[torch.Tensor]]


class Prefetched:
    """A source run in background threads, ``depth`` batches ahead of the training step, and
    across the epoch boundary.

    For petastorm, whose work (reading and decoding each row group, shuffling) would otherwise
    add to the step's time instead of overlapping it. As soon as epoch e's reader is exhausted,
    epoch e+1's reader starts filling its own queue while the step still works through e's
    last batches: the next epoch's first batch is waiting when the step asks for it. Which
    rows an epoch gives is unchanged: each epoch has its own reader. A consumer that stops
    early stops its thread; ``close`` stops the one reading ahead (the worker shell calls it).
    """

    def __init__(self, batches: BatchSource, depth: int = 32):
        self._batches, self._depth = batches, depth
        self._lock = threading.Lock()
        self._ahead: _Producer | None = None
        self._closed = False

    def __call__(self, epoch: int) -> Iterable[torch.Tensor]:
        with self._lock:
            producer, self._ahead = self._ahead, None
        if producer is None or producer.epoch != epoch:
            if producer is not None:
                producer.stop()
            producer = self._start(epoch)
        return producer.drain()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            producer, self._ahead = self._ahead, None
        if producer is not None:
            producer.stop()

    def _start(self, epoch: int) -> "_Producer":
        return _Producer(self._batches, epoch, self._depth, on_exhausted=self._read_ahead)

    def _read_ahead(self, epoch: int) -> None:
        """Called on epoch ``epoch - 1``'s thread once its reader is exhausted. Only the epoch being
        consumed reads ahead: a read-ahead epoch that is exhausted before anyone asked for it (a
        small shard: its whole epoch fits the queue) waits to be consumed, and starts nothing."""
        with self._lock:
            if self._closed or self._ahead is not None:
                return
            self._ahead = self._start(epoch)


class _Producer:
    """One epoch of a source, read on its own thread into a bounded queue."""

    _DONE = object()

    def __init__(self, batches: BatchSource, epoch: int, depth: int, on_exhausted: Callable[[int], None]):
        self.epoch = epoch
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(batches, on_exhausted),
                                        name=f"prefetch-epoch-{epoch}", daemon=True)
        self._thread.start()

    def _produce(self, batches: BatchSource, on_exhausted: Callable[[int], None]) -> None:
        try:
            for batch in batches(self.epoch):
                if not self._put(batch):
                    return
        except BaseException as e:  # re-raised on the training thread
            self._put(e)
            return
        on_exhausted(self.epoch + 1)
        self._put(self._DONE)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def drain(self) -> Iterable[torch.Tensor]:
        try:
            while (item := self._queue.get()) is not self._DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def petastorm_source(path: str | Path, rank: int, world: int, batch_size: int, seed: int) -> Prefetched:
    """This rank's row groups of an encoded split (``cur_shard=rank``), read by petastorm in a
    new order every epoch (``shuffle_row_groups``, seeded by (seed, epoch)); the rows of each row
    group are shuffled as they arrive and sliced into batches (``shuffled_batches``).

    petastorm's ``dummy`` pool reads on the calling thread, which here is ``Prefetched``'s
    read-ahead thread. Its ``thread`` pool would add a thread that polls its queues every
    millisecond: 6% of a core per reader, all epoch, even while it waits for the step.
    """
    from petastorm import make_batch_reader

    url = "file://" + str(Path(path).resolve())  # as_uri() would escape characters petastorm keeps

    def epoch_batches(epoch: int) -> Iterable[torch.Tensor]:
        g = _epoch_generator(seed, epoch, rank)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with make_batch_reader(url, schema_fields=[FEATURES], cur_shard=rank, shard_count=world,
                                   num_epochs=1, shuffle_row_groups=True, seed=seed + epoch,
                                   reader_pool_type="dummy") as reader:
                _matrix_by_arrow(reader)
                yield from shuffled_batches((_as_tensor(group.features) for group in reader), batch_size, g)

    return Prefetched(epoch_batches)


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
    from petastorm.arrow_reader_worker import ArrowReaderWorkerResultsQueueReader

    if isinstance(reader._results_queue_reader, ArrowReaderWorkerResultsQueueReader):
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
    batches are slices of it, rather than Ray's ``iter_torch_batches`` with a local shuffle
    buffer, which does that work per batch (benchmarks/RESULTS.md, training input). The order is not
    reproducible run to run: Ray Data's reads finish, and its streaming split hands out blocks,
    in whatever order the tasks run (the memory loader is the one whose order is a function of
    (seed, epoch, rank), for the tests that need it). On a CUDA ``device`` each window is pinned
    and copied to the GPU in one asynchronous transfer, and shuffled there: a training step
    never waits for a host copy of its batch.
    """
    def epoch_batches(epoch: int) -> Iterable[torch.Tensor]:
        g = _epoch_generator(seed, epoch, rank)
        windows = (arrow_features(table) for table in iterator.iter_batches(
            batch_size=window * batch_size, batch_format="pyarrow", prefetch_batches=2))
        yield from shuffled_batches(windows, batch_size, g, device)

    return epoch_batches


def shuffled_batches(chunks: Iterable[torch.Tensor], batch_size: int, g: torch.Generator,
                     device: torch.device | None = None) -> Iterable[torch.Tensor]:
    """Batches of ``batch_size`` rows from a stream of (N, D) chunks, each chunk's rows in the
    order of one permutation drawn from ``g``. Rows a chunk leaves over (fewer than a batch) go
    to the front of the next chunk, so only the stream's last batch can be short. On a CUDA
    ``device`` each chunk is pinned and copied in one asynchronous transfer, and shuffled there.
    """
    cuda = device is not None and device.type == "cuda"
    left = None
    for rows in chunks:
        perm = torch.randperm(rows.shape[0], generator=g)
        if cuda:
            rows = rows.pin_memory().to(device, non_blocking=True)
            perm = perm.to(device, non_blocking=True)
        rows = rows[perm]  # one gather per chunk
        start = 0
        if left is not None:  # complete the batch the previous chunk began
            start = min(batch_size - left.shape[0], rows.shape[0])
            left = torch.cat([left, rows[:start]])
            if left.shape[0] < batch_size:
                continue
            yield left
        n = rows.shape[0]
        full = n - (n - start) % batch_size
        for i in range(start, full, batch_size):
            yield rows[i:i + batch_size]
        left = rows[full:] if full < n else None
    if left is not None:
        yield left


def _epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The shuffling RNG of one rank's epoch (``shuffled_batches``)."""
    return torch.Generator().manual_seed((seed + epoch) * 1_000_003 + rank)


def _features_numpy(table):
    """The ``features`` column (``layout.vector_matrix``) as an (N, D) float32 array, a read-only
    view of the Arrow buffer where it can be."""
    from gen_pipeline.layout import vector_matrix

    return vector_matrix(table.column(FEATURES))


def arrow_features(table) -> torch.Tensor:
    """The ``features`` column as an (N, D) tensor, sharing the Arrow buffer where it can
    (read-only: index it, do not write to it)."""
    return _as_tensor(_features_numpy(table))


def _as_tensor(array) -> torch.Tensor:
    with warnings.catch_warnings():  # torch warns that an Arrow buffer is not writable
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


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

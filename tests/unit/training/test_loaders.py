"""Batch sources over encoded Parquet, without engines: petastorm reads the files itself."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from gen_pipeline.training.loaders import Prefetched, memory_source, petastorm_source, read_features, shuffled_batches


def _encoded(folder, rows=1200, dim=7, files=4, as_lists=False):
    """An encoded split as preprocess lays it out: ``features`` (each row's float32 vector as one
    binary value, ``layout.vector_binary``; ``as_lists``: a list<float32> column, as Spark writes an
    empty split), several files with two row groups each; every row is distinct (its first value
    is its row number)."""
    from gen_pipeline.layout import vector_binary

    folder.mkdir()
    x = np.random.default_rng(0).normal(size=(rows, dim)).astype(np.float32)
    x[:, 0] = np.arange(rows)
    per = rows // files
    for i in range(files):
        part = x[i * per:(i + 1) * per]
        col = pa.FixedSizeListArray.from_arrays(pa.array(part.ravel()), dim).cast(pa.list_(pa.float32()))
        col = col if as_lists else vector_binary(col)
        pq.write_table(pa.table({"features": col}), folder / f"part-{i:05d}.parquet", row_group_size=per // 2)
    return folder


def _rows(t: torch.Tensor) -> list[tuple]:
    return sorted(map(tuple, t.tolist()))


@pytest.mark.parametrize("world", [1, 2])
def test_petastorm_gives_every_row_once_per_epoch_reshuffled(tmp_path, monkeypatch, world):
    from petastorm.arrow_reader_worker import ArrowReaderWorkerResultsQueueReader

    def refuse(*_):
        raise AssertionError("petastorm's row-by-row conversion ran")

    # Our Arrow conversion replaces petastorm's np.vstack one: the original must never run.
    monkeypatch.setattr(ArrowReaderWorkerResultsQueueReader, "read_next", refuse)
    path = _encoded(tmp_path / "train")
    expected = read_features(path)
    epochs = {0: [], 1: []}
    for rank in range(world):
        source = petastorm_source(path, rank, world, batch_size=64, seed=5)
        for epoch in epochs:
            batches = list(source(epoch))
            assert all(b.shape == (64, 7) and b.dtype == torch.float32 for b in batches[:-1])
            epochs[epoch].append(torch.cat(batches))
        source.close()  # stops the reader that started on epoch 2
    for shards in epochs.values():  # the ranks' shards together: every row exactly once
        assert _rows(torch.cat(shards)) == _rows(expected)
    assert not torch.equal(epochs[0][0], epochs[1][0])  # the next epoch is reshuffled
    assert not torch.equal(epochs[0][0][:100], expected[:100])  # and the first is shuffled at all


def test_memory_source_strides_its_shard_and_reshuffles_per_epoch(tmp_path):
    data = read_features(_encoded(tmp_path / "train"))
    shards = [torch.cat(list(memory_source(data, r, 2, 100, seed=1)(0))) for r in (0, 1)]
    assert _rows(torch.cat(shards)) == _rows(data)
    again = torch.cat(list(memory_source(data, 0, 2, 100, seed=1)(0)))
    assert torch.equal(again, shards[0])  # a function of (seed, epoch, rank)
    assert not torch.equal(torch.cat(list(memory_source(data, 0, 2, 100, seed=1)(1))), shards[0])


def test_shuffled_batches_carry_leftover_rows_so_only_the_last_batch_is_short():
    data = torch.arange(1000, dtype=torch.float32).reshape(-1, 1)
    sizes = [37, 300, 5, 5, 153, 500]  # chunks shorter than a batch, and leftovers, included
    chunks = torch.split(data, sizes)
    batches = list(shuffled_batches(chunks, 64, torch.Generator().manual_seed(0)))
    assert [b.shape[0] for b in batches] == [64] * 15 + [40]
    assert _rows(torch.cat(batches)) == _rows(data)
    assert not torch.equal(torch.cat(batches), data)  # shuffled within chunks


def test_prefetched_reads_the_next_epoch_ahead_and_close_stops_it():
    import threading
    import time

    started, before = [], set(threading.enumerate())

    def source(epoch):
        started.append(epoch)
        for i in range(3):
            yield torch.full((2, 1), float(epoch * 10 + i))

    batches = Prefetched(source, depth=2)
    assert [float(b[0]) for b in batches(0)] == [0, 1, 2]
    deadline = time.monotonic() + 10
    while started != [0, 1] and time.monotonic() < deadline:  # epoch 1 starts without being asked
        time.sleep(0.01)
    assert started == [0, 1]
    assert [float(b[0]) for b in batches(1)] == [10, 11, 12]  # the batches read ahead, in order
    assert [float(b[0]) for b in batches(1)] == [10, 11, 12]  # asked again (a short shard): read again
    batches.close()
    time.sleep(0.2)
    ahead = [t for t in set(threading.enumerate()) - before if t.name.startswith("prefetch-epoch-")]
    assert not ahead  # close stopped the reader that had started on epoch 2


def test_encoded_vectors_read_back_exactly_from_binary_and_from_lists(tmp_path):
    """The stored ``features`` (one binary value of 4 D bytes a row) and a list<float32> column of
    the same rows read back to the same (N, D) float32 matrix; a row of another length is an error."""
    from gen_pipeline.errors import PipelineError
    from gen_pipeline.layout import vector_binary, vector_matrix

    a, b = read_features(_encoded(tmp_path / "bin")), read_features(_encoded(tmp_path / "lists", as_lists=True))
    assert a.shape == (1200, 7) and a.dtype == torch.float32 and torch.equal(a, b)
    assert sorted(a[:, 0].tolist()) == list(range(1200))
    assert vector_matrix(pq.read_table(tmp_path / "bin").column("features")).shape == (1200, 7)
    ragged = pa.array([[1.0, 2.0], [3.0, 4.0, 5.0, 6.0]], pa.list_(pa.float32()))
    with pytest.raises(PipelineError, match="unequal length"):
        vector_binary(ragged)
    uneven = pa.array([b"\0" * 8, b"\0" * 4], pa.binary())
    with pytest.raises(PipelineError, match="unequal length"):
        vector_matrix(uneven)


def test_a_limited_read_takes_each_files_head_in_proportion_to_its_rows(tmp_path):
    """``read_clean(split, limit)``: each file's rows are in hash order, so its head is a uniform
    sample of them; a limit takes every file's head in proportion to its rows, never the first
    file's alone."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gen_pipeline.layout import PreprocessOutput

    out = PreprocessOutput(tmp_path)
    folder = out.clean("train")
    folder.mkdir(parents=True)
    start = 0
    for k, n in enumerate((10, 30, 60)):
        pq.write_table(pa.table({"v": pa.array(range(start, start + n), pa.int64())}), folder / f"part-{k:05d}.parquet")
        start += n
    got = out.read_clean("train", limit=10)["v"].tolist()
    assert got == [0, 10, 11, 12, 40, 41, 42, 43, 44, 45]
    assert len(out.read_clean("train", limit=7)) == 7 and len(out.read_clean("train", limit=500)) == 100

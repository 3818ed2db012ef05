"""Every path and file name of a run, named once (as kedro's data catalog names each dataset).

Stages, kinds and tests ask this module where things are; nothing else spells a run's folder
or file names. ``RunLayout(work_dir, name)``:

    <work>/runs/<name>/preprocess/          the preprocess output (``PreprocessOutput``)
        encoded/<split>/  clean/<split>/  quarantine/  transform_spec.json  manifest.json
        schema.json  classifier.pt (images: the evaluation yardstick)
    <work>/runs/<name>/train/<run>.json     the driver's record of each Ray Train run
    <work>/schemas/<name>.yaml              a user table's schema (inferred once, editable, reused)
    <work>/ray_results/<run>/               Ray Train's checkpoints
    <work>/outputs/<name>/generated/  <work>/outputs/<name>/scored/
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gen_pipeline.errors import PipelineError

SPLITS = ("train", "validation", "test")
SPEC_FILE = "transform_spec.json"
MANIFEST_FILE = "manifest.json"
SCHEMA_FILE = "schema.json"
CLASSIFIER_FILE = "classifier.pt"
LINEAGE_FILE = "_lineage.json"
PREVIEW_FILE = "_preview.png"


@dataclass(frozen=True)
class RunLayout:
    work_dir: Path
    name: str

    @property
    def run_dir(self) -> Path:
        return self.work_dir / "runs" / self.name

    @property
    def preprocess(self) -> Path:
        return self.run_dir / "preprocess"

    @property
    def schema_file(self) -> Path:
        """A user table's schema, inferred on the first preprocess and kept (and edited) across runs."""
        return self.work_dir / "schemas" / f"{self.name}.yaml"

    @property
    def train_records(self) -> Path:
        return self.run_dir / "train"

    @property
    def ray_storage(self) -> Path:
        return self.work_dir / "ray_results"

    def output(self, what: str) -> Path:
        """``generated`` or ``scored``."""
        return self.work_dir / "outputs" / self.name / what


@dataclass(frozen=True)
class PreprocessOutput:
    """The one reader of a preprocess output folder (written by ``stages.preprocess``)."""

    root: Path

    def encoded(self, split: str) -> Path:
        return self.root / "encoded" / split

    def clean(self, split: str) -> Path:
        return self.root / "clean" / split

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def spec_path(self) -> Path:
        return self.root / SPEC_FILE

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_FILE

    @property
    def classifier_path(self) -> Path:
        return self.root / CLASSIFIER_FILE

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def require(self) -> "PreprocessOutput":
        if not self.exists():
            raise PipelineError(f"{self.root}: no preprocess output; run `gen-pipeline preprocess --config ...` first")
        return self

    @property
    def spec(self) -> dict:
        return json.loads(self.spec_path.read_text())

    @property
    def manifest(self) -> dict:
        return json.loads(self.manifest_path.read_text())

    def read_clean(self, split: str, limit: int | None = None):
        """One split's typed rows as pandas (nullable integers); ``limit`` rows: from the head of
        every file, in proportion to its rows (each file's rows are in the order of a hash, so
        its head is a uniform sample of them, and the heads together one of the split)."""
        import pandas as pd
        import pyarrow as pa

        table = self._read(self.clean(split), None, limit)
        return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)

    def read_encoded(self, split: str, limit: int | None = None, columns=("features", "label")):
        """(features float32 (N, D), labels int (N,) or None) of one encoded split."""
        table = self._read(self.encoded(split), columns, limit, optional=("label",))
        labels = table.column("label").to_numpy() if "label" in table.column_names else None
        return np.array(vector_matrix(table.column("features"))), labels  # a writable copy

    @staticmethod
    def _read(path: Path, columns, limit: int | None, optional=()):
        import pyarrow as pa
        import pyarrow.dataset as ds

        if not path.exists():
            raise PipelineError(f"{path}: not found; run `gen-pipeline preprocess` first")
        try:
            dataset = ds.dataset(path, format="parquet")
            if columns is not None:
                columns = [c for c in columns if c not in optional or c in dataset.schema.names]
            return _heads(dataset, limit, columns) if limit is not None else dataset.to_table(columns=columns)
        except (pa.ArrowInvalid, OSError) as e:
            raise PipelineError(f"{path}: unreadable Parquet ({str(e).splitlines()[0][:160]}); "
                                "rerun `gen-pipeline preprocess` to rebuild it") from None


def _heads(dataset, limit: int, columns):
    """``limit`` rows of a Parquet dataset: from the head of each file, its share in proportion
    to its rows (largest remainders), in file order."""
    import pyarrow as pa

    fragments = list(dataset.get_fragments())
    rows = [f.count_rows() for f in fragments]
    total = sum(rows)
    if limit >= total:
        return dataset.to_table(columns=columns)
    shares = [limit * n // total for n in rows]
    by_remainder = sorted(range(len(rows)), key=lambda i: -(limit * rows[i] % total))
    for i in by_remainder[:limit - sum(shares)]:
        shares[i] += 1
    heads = [f.head(k, columns=columns) for f, k in zip(fragments, shares) if k]
    return pa.concat_tables(heads) if heads else dataset.head(0, columns=columns)


# ---------------------------------------------------------------------------------------------
# The encoded splits' ``features``: each row's D float32 values (little-endian) as one binary
# value of 4 D bytes. Parquet writes a binary value as one run of bytes; a list<float> column
# costs a repetition and a definition level per float, which made the encoded write 2.3 times
# as slow (benchmarks/RESULTS.md, preprocess at scale). Read back as an (N, D) view of the bytes.
# A list<float> column (written before, or by Spark for an empty split) reads the same way.
# ---------------------------------------------------------------------------------------------
def vector_binary(column):
    """A list<float32> Arrow array whose lists all have one length D -> a binary array, each value
    the row's D float32s (4 D bytes, little-endian): the ``features`` column as it is stored."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(column)
    lengths = pc.min_max(column.value_lengths()).as_py()
    if n and lengths["min"] != lengths["max"]:
        raise PipelineError(f"encoded vectors of unequal length ({lengths['min']} to {lengths['max']} values)")
    flat = np.ascontiguousarray(column.flatten().to_numpy(zero_copy_only=False), dtype="<f4")
    width = 4 * (flat.size // n) if n else 0
    offsets = pa.py_buffer(np.arange(0, n * width + 1, width or 1, dtype=np.int32)[:n + 1])
    return pa.Array.from_buffers(pa.binary(), n, [None, offsets, pa.py_buffer(flat)])


def vector_matrix(column) -> np.ndarray:
    """A ``features`` column (binary as ``vector_binary`` writes it, or list<float32>; an Arrow
    array or chunked array) -> an (N, D) float32 array: a read-only view of the Arrow buffer
    when the column is one chunk, else a copy."""
    import pyarrow as pa

    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = [_chunk_matrix(c) for c in chunks if len(c)]
    if not parts:
        return np.zeros((0, 0), np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _chunk_matrix(chunk) -> np.ndarray:
    import pyarrow as pa

    n = len(chunk)
    if pa.types.is_binary(chunk.type):
        offsets = np.frombuffer(chunk.buffers()[1], np.int32, n + 1, chunk.offset * 4)
        start, end = int(offsets[0]), int(offsets[-1])
        if (end - start) % (4 * n) or np.any(np.diff(offsets) != (end - start) // n):
            raise PipelineError("encoded vectors of unequal length: rerun `gen-pipeline preprocess`")
        return np.frombuffer(chunk.buffers()[2], "<f4", (end - start) // 4, start).reshape(n, -1)
    flat = chunk.flatten().to_numpy(zero_copy_only=False)
    return (flat if flat.dtype == np.float32 else flat.astype(np.float32)).reshape(n, -1)

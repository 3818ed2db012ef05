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
        """One split's typed rows as pandas (nullable integers); ``limit`` rows from its head
        (the files are ordered by a hash of each row, so the head is a uniform sample)."""
        import pandas as pd
        import pyarrow as pa

        table = self._read(self.clean(split), None, limit)
        return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)

    def read_encoded(self, split: str, limit: int | None = None, columns=("features", "label")):
        """(features float32 (N, D), labels int (N,) or None) of one encoded split."""
        import numpy as np

        table = self._read(self.encoded(split), columns, limit, optional=("label",))
        col = table.column("features").combine_chunks()
        n = len(col)
        labels = table.column("label").to_numpy() if "label" in table.column_names else None
        if not n:
            return np.zeros((0, 0), np.float32), labels
        x = col.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, -1)
        return x, labels

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
            return dataset.head(limit, columns=columns) if limit is not None else dataset.to_table(columns=columns)
        except (pa.ArrowInvalid, OSError) as e:
            raise PipelineError(f"{path}: unreadable Parquet ({str(e).splitlines()[0][:160]}); "
                                "rerun `gen-pipeline preprocess` to rebuild it") from None

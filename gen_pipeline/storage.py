"""Atomic directory outputs: write into a hidden staging folder beside the target, then rename.

A reader never sees a half-written output, and a rerun into the same path replaces the old
output whole instead of appending to it or mixing with it.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path


def staging_dir(final: Path) -> Path:
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed earlier run
    return final.parent / f".{final.name}.staging-{uuid.uuid4().hex[:8]}"


def commit(staging: Path, final: Path) -> Path:
    """Swap ``staging`` into place as ``final`` (the old output, if any, is removed)."""
    final = Path(final)
    trash = None
    if final.exists():
        trash = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        final.rename(trash)
    Path(staging).rename(final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return final


def write_json(path: Path, obj: dict) -> None:
    Path(path).write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))


class PartWriter:
    """One Spark task's Parquet file, ``folder/part-<partition>.parquet``, written by pyarrow from
    the task's Python worker under a hidden name and renamed into place by ``close``: a retried
    task replaces the file whole, and Spark's readers skip the hidden name of one that failed.
    No file is written when no batch came. ``options``: ``pyarrow.parquet.ParquetWriter``'s.
    As a context manager: closed on leaving, kept only when no exception left the block."""

    def __init__(self, folder, partition: int, **options):
        self.final = Path(folder) / f"part-{partition:05d}.parquet"
        self.tmp = self.final.with_name(f".{self.final.name}.{uuid.uuid4().hex[:8]}.tmp")
        self.options = {"store_schema": False, **options}
        self.writer = None
        self.rows = 0

    def write(self, batch, row_group_size: int | None = None) -> None:
        import pyarrow.parquet as pq

        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, batch.schema, **self.options)
        self.writer.write_batch(batch, row_group_size=row_group_size)
        self.rows += batch.num_rows

    def __enter__(self) -> "PartWriter":
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.close(keep=kind is None)

    def close(self, keep: bool = True) -> int:
        """Close the file and (``keep``) rename it into place; returns the rows written."""
        import os

        if self.writer is not None:
            self.writer.close()
            self.writer = None
            if keep:
                os.replace(self.tmp, self.final)
            else:
                self.tmp.unlink(missing_ok=True)
        return self.rows


def remove_hidden_parts(folder) -> None:
    """Delete the hidden files failed or losing task attempts of ``PartWriter`` left in ``folder``."""
    for tmp in Path(folder).glob(".part-*.tmp"):
        tmp.unlink(missing_ok=True)

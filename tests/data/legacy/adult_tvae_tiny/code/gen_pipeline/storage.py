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

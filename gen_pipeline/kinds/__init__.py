"""The one lookup that answers "which kind of data is this?", from a config, a manifest or a spec.

Registering a kind is one line below: its name and where its ``DataKind`` lives. A kind's
package (``kinds/<name>/__init__.py``) stays light to import (the heavy modules load inside its
methods), so the config can list every kind's datasets and metrics when it validates.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from gen_pipeline.errors import PipelineError

KINDS = {
    "table": "gen_pipeline.kinds.table:TABLE",
    "image": "gen_pipeline.kinds.image:IMAGE",
    "signal": "gen_pipeline.kinds.signal:SIGNAL",
}


@lru_cache(maxsize=None)
def get_kind(name: str):
    """The registered ``DataKind`` called ``name``; an unknown name is a one-line error."""
    if name not in KINDS:
        raise PipelineError(f"unknown data kind {name!r} (known: {', '.join(KINDS)})")
    module, attr = KINDS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def all_kinds():
    return [get_kind(n) for n in KINDS]


def kind_for_dataset(dataset: str):
    for kind in all_kinds():
        if dataset in kind.datasets:
            return kind
    known = sorted(d for k in all_kinds() for d in k.datasets)
    raise PipelineError(f"data.dataset: unknown dataset {dataset!r} (known: {', '.join(known)})")


def kind_of(cfg=None, *, manifest: dict | None = None, spec: dict | None = None):
    """The kind of a config (by its dataset), a preprocess manifest or a transform spec.

    Specs and manifests written before kinds existed carry no ``kind`` when they describe a
    table; an image spec always said ``kind: image``.
    """
    if cfg is not None:
        return kind_for_dataset(cfg.data.dataset)
    record = manifest if manifest is not None else spec
    if record is None:
        raise TypeError("kind_of needs a config, a manifest or a spec")
    return get_kind(record.get("kind", "table"))


def all_datasets() -> tuple[str, ...]:
    return tuple(d for k in all_kinds() for d in k.datasets)


def all_metrics() -> dict[str, bool]:
    """Every metric any kind reports -> lower is better."""
    out: dict[str, bool] = {}
    for k in all_kinds():
        for m in k.metrics:
            out[m.name] = m.lower_is_better
    return out

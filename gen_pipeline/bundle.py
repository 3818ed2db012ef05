"""Everything needed to rebuild a trained model, framework-free: config, transform spec, weights.

The MLflow pyfunc (``registry.py``) and the Spark generate/score tasks both rebuild the model
from a bundle, so a registered model is self-describing.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pandas as pd
import torch

from gen_pipeline.config import PipelineConfig
from gen_pipeline.models import GenerativeModel, build_model
from gen_pipeline.images import transformer_for

SAMPLE_CHUNK = 65_536


def partition_seed(seed: int, partition: int) -> int:
    """A seed per (run seed, partition): a retried or rerun task draws the same rows."""
    digest = hashlib.sha256(f"gen_pipeline:{seed}:{partition}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


class ModelBundle:
    def __init__(self, config: PipelineConfig, spec: dict, state_dict: dict, manifest: dict | None = None):
        self.config = config
        self.spec = spec
        self.manifest = manifest or {}
        self.transformer = transformer_for(spec)  # a table or an image set
        self.model: GenerativeModel = build_model(config.model, self.transformer.spans, self.transformer.output_dim)
        self.model.load_state_dict(state_dict)
        self.model.eval()

    @property
    def schema(self):
        return self.transformer.schema

    # ---- (de)serialisation: tensors and strings only, loaded with weights_only=True ----------
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save({"config": json.dumps(self.config.model_dump(mode="json")), "spec": json.dumps(self.spec),
                    "manifest": json.dumps(self.manifest), "state_dict": self.model.state_dict()}, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "ModelBundle":
        d = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return cls(PipelineConfig.model_validate(json.loads(d["config"])), json.loads(d["spec"]),
                   d["state_dict"], json.loads(d["manifest"]))

    # ---- the two things a bundle does ---------------------------------------------------------
    def sample_arrow(self, n: int, seed: int, chunk: int = SAMPLE_CHUNK):
        """Yield Arrow tables (original schema) totalling ``n`` rows, deterministic for ``seed``."""
        g = torch.Generator().manual_seed(seed)
        chunk = min(chunk, getattr(self.model, "max_sample_chunk", chunk))  # conv activations are large
        done = 0
        while done < n:
            k = min(chunk, n - done)
            yield self.transformer.inverse_to_arrow(self.model.sample(k, generator=g).numpy())
            done += k

    def sample(self, n: int, seed: int) -> pd.DataFrame:
        """``n`` rows as pandas (nullable integer columns), deterministic for ``seed``."""
        import pyarrow as pa

        tables = list(self.sample_arrow(n, seed)) or [
            self.transformer.inverse_to_arrow(np.zeros((0, self.transformer.output_dim), np.float32))]
        return pa.concat_tables(tables).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)

    def score(self, df: pd.DataFrame) -> tuple[np.ndarray, list[str | None]]:
        """Per-row anomaly score (NaN where the row cannot be encoded) and the reason."""
        x, reasons = self.transformer.transform(df, strict=False)
        scores = np.full(len(df), np.nan)
        ok = np.array([r is None for r in reasons], dtype=bool)
        if ok.any():
            scores[ok] = self.model.score(torch.from_numpy(x[ok])).double().numpy()
        return scores, reasons

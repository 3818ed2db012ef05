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
from gen_pipeline.errors import PipelineError
from gen_pipeline.models import GenerativeModel, build_model
from gen_pipeline.models.base import draw_categories
from gen_pipeline.images import transformer_for
from gen_pipeline.transforms import TableTransformer

# Rows per sampling forward. A 65,536-row chunk's arrays (latent, activations, logits: 33-42 MB
# each) are above glibc's largest heap-reuse size (32 MB), so every chunk mapped fresh pages and
# took ~150,000 page faults per million rows; at 16,384 rows they are reused. Adult TVAE,
# sample + write on one core: 214k -> 258k rows/s (medians of 4). One Parquet row group each.
SAMPLE_CHUNK = 16_384
MAX_REJECTION_DRAWS = 2_000_000  # conditional sampling gives up after this many draws if ...
MIN_ACCEPTANCE = 1e-3  # ... fewer than this share of them matched


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
    def conditions(self, pairs: dict[str, str] | None) -> dict[int, int]:
        """``{"sex": "Female"}`` -> {span start: category index}; bad names and values raise."""
        return dict(self.transformer.condition(c, v) for c, v in (pairs or {}).items())

    def sample_arrow(self, n: int, seed: int, chunk: int = SAMPLE_CHUNK, conditions: dict[str, str] | None = None,
                     dictionary: bool = False):
        """Yield Arrow tables (original schema) totalling ``n`` rows, deterministic for ``seed``.

        With ``dictionary`` categorical columns come as dictionary arrays (for writing Parquet:
        see ``TableTransformer.inverse_to_arrow``); images ignore it.

        With ``conditions`` ({column: value}, categorical columns) only matching rows come out:
        a conditional model (the GAN) is asked for the first value directly; every draw is then
        filtered, so the rows follow the model's conditional distribution given all the values.
        """
        g = torch.Generator().manual_seed(seed)
        fixed = self.conditions(conditions)
        chunk = min(chunk, self.model.max_sample_chunk)  # e.g. 4,096 images: a conv forward's activations
        if not isinstance(self.transformer, TableTransformer):  # images: pixels, no categories to draw
            for done in range(0, n, chunk):
                yield self.transformer.inverse_to_arrow(self.model.sample(min(chunk, n - done), generator=g).numpy())
            return
        code_of = self.transformer.code_index
        done = drawn = 0
        while done < n:
            k = min(chunk, n - done)
            if not fixed:
                x = self.model.sample_raw(k, generator=g)
                codes = draw_categories(x, self.transformer.spans, g)
            else:
                x = self.model.sample_raw(chunk, generator=g, fixed=fixed)
                codes = draw_categories(x, self.transformer.spans, g)
                drawn += chunk
                keep = torch.ones(chunk, dtype=torch.bool)
                for start, index in fixed.items():
                    keep &= codes[:, code_of[start]] == index
                x, codes = x[keep][:k], codes[keep][:k]
                if drawn >= MAX_REJECTION_DRAWS and (done + len(x)) < drawn * MIN_ACCEPTANCE:
                    raise PipelineError(
                        f"--condition {conditions}: only {done + len(x):,} of {drawn:,} sampled rows match; "
                        "the model almost never produces this combination (ask for fewer conditions)")
            if len(x):
                yield self.transformer.inverse_to_arrow(x.numpy(), codes.numpy(), dictionary=dictionary)
            done += len(x)

    def sample(self, n: int, seed: int, conditions: dict[str, str] | None = None) -> pd.DataFrame:
        """``n`` rows as pandas (nullable integer columns), deterministic for ``seed``."""
        import pyarrow as pa

        tables = list(self.sample_arrow(n, seed, conditions=conditions)) or [
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

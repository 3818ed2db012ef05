"""Everything needed to rebuild a trained model, framework-free: config, transform spec,
manifest, weights. The one bundle format: the MLflow model (``registry.py``) stores exactly
these four as artifacts, and the Spark generate/score tasks receive them as the bytes of
``to_bytes``, so a registered model is self-describing.
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
from gen_pipeline.kinds import kind_of
from gen_pipeline.layout import MANIFEST_FILE, SPEC_FILE
from gen_pipeline.models import build_model, family
from gen_pipeline.models.base import GenerativeModel

# Rows per sampling forward: each chunk's arrays stay below glibc's largest heap-reuse size
# (32 MB), so chunks reuse their pages instead of faulting in fresh ones (benchmarks/RESULTS.md,
# generate). One Parquet row group each.
SAMPLE_CHUNK = 16_384
FILES = {"weights": "weights.pt", "model_config": "model_config.json", "transform_spec": SPEC_FILE,
         "manifest": MANIFEST_FILE}  # artifact name -> file name: the bundle's one format
# Model fields added after models were first registered, with the value that rebuilds those
# models as they were trained (a config logged before a field existed lacks it).
LEGACY_MODEL_FIELDS = {"upsample": "transposed", "spectral_norm": False, "ema_decay": 0.0, "diff_augment": "none"}
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
        self.kind = kind_of(spec=spec)
        self.family = family(config.model.family)  # what the model can do (gen_pipeline.models)
        self.transformer = self.kind.transformer(spec)
        self.model: GenerativeModel = build_model(config.model, self.transformer.spans, self.transformer.output_dim)
        self.model.load_state_dict(state_dict)
        self.model.eval()

    @property
    def schema(self):
        return self.transformer.schema

    # ---- the one format: four files (tensors and JSON only, loaded with weights_only=True) ----
    def to_parts(self) -> dict[str, bytes]:
        """{artifact name: file bytes}: what the MLflow model stores (``FILES``) and what
        ``to_bytes`` ships to Spark tasks."""
        buf = io.BytesIO()
        torch.save(self.model.state_dict(), buf)
        return {"weights": buf.getvalue(),
                "model_config": json.dumps(self.config.model_dump(mode="json"), indent=1).encode(),
                "transform_spec": json.dumps(self.spec).encode(),
                "manifest": json.dumps(self.manifest, indent=1).encode()}

    @classmethod
    def from_parts(cls, parts: dict[str, bytes]) -> "ModelBundle":
        state = torch.load(io.BytesIO(parts["weights"]), map_location="cpu", weights_only=True)
        raw = json.loads(parts["model_config"])
        raw["model"] = {**LEGACY_MODEL_FIELDS, **raw.get("model", {})}  # fields the logged config predates
        config = PipelineConfig.model_validate(raw)
        return cls(config, json.loads(parts["transform_spec"]), state, json.loads(parts["manifest"]))

    def save(self, folder) -> dict[str, str]:
        """Write the four files into ``folder``; returns {artifact name: path}."""
        from pathlib import Path

        paths = {}
        for name, data in self.to_parts().items():
            path = Path(folder) / FILES[name]
            path.write_bytes(data)
            paths[name] = str(path)
        return paths

    @classmethod
    def load(cls, paths: dict[str, str]) -> "ModelBundle":
        from pathlib import Path

        return cls.from_parts({name: Path(paths[name]).read_bytes() for name in FILES})

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save(self.to_parts(), buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "ModelBundle":
        return cls.from_parts(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))

    # ---- the two things a bundle does ---------------------------------------------------------
    def conditions(self, pairs: dict[str, str] | None) -> dict[int, int]:
        """``{"sex": "Female"}`` -> {span start: category index}; bad names and values raise."""
        return dict(self.transformer.condition(c, v) for c, v in (pairs or {}).items())

    def sample_arrow(self, n: int, seed: int, chunk: int = SAMPLE_CHUNK, conditions: dict[str, str] | None = None,
                     dictionary: bool = False, row_offset: int | None = None):
        """Yield Arrow tables (original schema) totalling ``n`` rows, deterministic for ``seed``.

        With ``dictionary`` categorical columns come as dictionary arrays (for writing Parquet:
        see ``TableTransformer.inverse_to_arrow``); other kinds ignore it.

        ``row_offset``: the job-wide index of the first row (generate's partitions), so values
        that must be unique across a job (regenerated identifiers) are.

        With ``conditions`` ({column: value}) only matching rows come out: a conditional model
        is asked for the values directly; every draw is then filtered, so the rows follow the
        model's conditional distribution given all the values.
        """
        g = torch.Generator().manual_seed(seed)
        fixed = self.conditions(conditions)
        chunk = min(chunk, self.model.max_sample_chunk)  # e.g. 4,096 images: a conv forward's activations
        tr = self.transformer
        done = drawn = 0
        while done < n:
            k = min(chunk, n - done)
            x, codes = self.model.sample_drawn(chunk if fixed else k, generator=g, fixed=fixed)
            if codes is None:
                codes = tr.draw(x, g)  # categories from their logits (tables); None where nothing is drawn
            if fixed:
                drawn += chunk
                keep = tr.matches(x, codes, fixed)
                x, codes = x[keep][:k], None if codes is None else codes[keep][:k]
                if drawn >= MAX_REJECTION_DRAWS and (done + len(x)) < drawn * MIN_ACCEPTANCE:
                    raise PipelineError(
                        f"--condition {conditions}: only {done + len(x):,} of {drawn:,} sampled rows match; "
                        "the model almost never produces this combination (ask for fewer conditions)")
            if len(x):
                yield tr.to_arrow(x.numpy(), None if codes is None else codes.numpy(), dictionary=dictionary,
                                  row_offset=None if row_offset is None else row_offset + done)
            done += len(x)

    def sample(self, n: int, seed: int, conditions: dict[str, str] | None = None) -> pd.DataFrame:
        """``n`` rows as pandas (nullable integer columns), deterministic for ``seed``."""
        import pyarrow as pa

        tables = list(self.sample_arrow(n, seed, conditions=conditions)) or [
            self.transformer.inverse_to_arrow(np.zeros((0, self.transformer.output_dim), np.float32))]
        return pa.concat_tables(tables).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)

    def score(self, df: pd.DataFrame) -> tuple[np.ndarray, list[str | None]]:
        """Per-row anomaly score (NaN where the row cannot be encoded) and the reason."""
        if not self.family.can_score:
            raise PipelineError(f"model family {self.family.name!r} has no anomaly score; score with a family "
                                f"that has one ({', '.join(scoring_families(self.kind.name))})")
        x, reasons = self.transformer.transform(df, strict=False)
        scores = np.full(len(df), np.nan)
        ok = np.array([r is None for r in reasons], dtype=bool)
        if ok.any():
            scores[ok] = self.model.score(torch.from_numpy(x[ok])).double().numpy()
        return scores, reasons


def scoring_families(kind: str) -> list[str]:
    """The registered families that can score rows of ``kind``."""
    from gen_pipeline.models import FAMILIES

    return [name for name, spec in FAMILIES.items() if spec.can_score and kind in spec.kinds]

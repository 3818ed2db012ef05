"""A tiny third kind, 1-D signals, kept to show (and test) what a new data kind costs: this
folder, one model file (``models/signal_vae.py``) and one registration line in ``kinds.KINDS``
(plus the family's line in ``models.FAMILIES``).

``sine``: 4,000 signals of 32 samples, each a sine of one of four frequencies with a random
phase plus noise, made from a fixed seed into the dataset cache (nothing downloaded). The
encoding standardises each position with a mean and standard deviation fitted by one Spark
aggregation; generated signals are written as a ``signal`` list<double> column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gen_pipeline.kinds.base import DataKind, Evaluation, Metric, RawRecords, ScoreJob

LENGTH = 32
SPEC_VERSION = 1


def sine_file(datasets_dir: Path, n: int = 4000, seed: int = 0) -> Path:
    """The ``sine`` set as an .npz (``x``: (n, 32) float32), made once from ``seed``."""
    path = Path(datasets_dir) / "sine" / "sine.npz"
    if not path.is_file():
        rng = np.random.default_rng(seed)
        t = np.arange(LENGTH) / LENGTH
        freq = rng.choice([1.0, 2.0, 3.0, 5.0], size=(n, 1))
        phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
        x = np.sin(2 * np.pi * freq * t + phase) + 0.1 * rng.standard_normal((n, LENGTH))
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(".sine.npz.part")
        with open(part, "wb") as f:
            np.savez(f, x=x.astype(np.float32))
        part.replace(path)
    return path


class SignalTransformer:
    """Standardise each position; ``to_arrow`` turns model output back into signals."""

    def __init__(self, spec: dict):
        from gen_pipeline.spans import Span

        self.spec = spec
        self.mean = np.asarray(spec["mean"], np.float32)
        self.std = np.asarray(spec["std"], np.float32)
        self.output_dim = len(self.mean)
        self.spans = [Span("signal", 0, self.output_dim)]
        from gen_pipeline.kinds.table.schema import Column, TableSchema

        self.schema = TableSchema(columns=(Column("signal", "continuous", "float"),))  # one list column

    def encode(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def decode(self, x: np.ndarray) -> np.ndarray:
        return x * self.std + self.mean

    def condition(self, column: str, value: str):
        from gen_pipeline.errors import PipelineError

        raise PipelineError(f"--condition {column}={value}: signals take no conditions")

    def transform(self, df, strict: bool = True):
        x = np.stack([np.asarray(v, np.float32) for v in df["signal"]])
        return self.encode(x), [None] * len(x)

    def draw(self, raw, generator):
        return None

    def matches(self, raw, codes, fixed):
        raise AssertionError("signals take no conditions")

    def to_arrow(self, x: np.ndarray, codes=None, dictionary: bool = False, row_offset: int | None = None):
        import pyarrow as pa

        values = self.decode(x).astype(np.float64)
        offsets = np.arange(0, values.size + 1, self.output_dim, dtype=np.int32)
        return pa.table({"signal": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.reshape(-1)))})

    inverse_to_arrow = to_arrow


def _autocorrelation(x: np.ndarray, lags: int = 8) -> np.ndarray:
    x = x - x.mean(1, keepdims=True)
    den = (x * x).sum(1) + 1e-9
    return np.array([((x[:, :-k] * x[:, k:]).sum(1) / den).mean() for k in range(1, lags + 1)])


class SignalKind(DataKind):
    name = "signal"
    datasets = ("sine",)
    metrics = (Metric("autocorrelation_error", lower_is_better=True), Metric("moment_error", lower_is_better=True),
               Metric("test_neg_elbo_nats", lower_is_better=True))
    default_primary_metric = "autocorrelation_error"
    position = "index"
    split_columns = ("source", "index")
    quarantine_columns = ("source", "index")

    def read(self, spark, cfg, datasets_dir: Path, work_dir: Path) -> RawRecords:
        from pyspark.sql import functions as F

        from gen_pipeline.stages.preprocess import file_listing

        path = sine_file(datasets_dir)
        x = np.load(path)["x"]
        rows = [(path.name, i, [float(v) for v in row]) for i, row in enumerate(x)]
        frame = spark.createDataFrame(rows, "source string, `index` bigint, values array<double>")
        bad = F.exists("values", lambda v: F.isnan(v) | (F.abs(v) == float("inf")))
        frame = frame.withColumn("_reason", F.when(bad, F.lit("not finite: a NaN or infinite sample"))) \
            .withColumn("split_hint", F.lit(None).cast("string"))
        return RawRecords("sine", frame, file_listing([path]))

    def fit(self, spark, good, records: RawRecords, cfg) -> dict:
        from pyspark.sql import functions as F

        train = good.filter(F.col("split") == "train")
        aggs = [f(F.element_at("values", i + 1)).alias(f"{name}{i}")
                for i in range(LENGTH) for name, f in (("m", F.mean), ("s", F.stddev))]
        r = train.agg(*aggs).first()
        return {"version": SPEC_VERSION, "kind": "signal", "length": LENGTH,
                "mean": [r[f"m{i}"] for i in range(LENGTH)], "std": [max(r[f"s{i}"] or 1.0, 1e-6) for i in range(LENGTH)]}

    def encoder(self, spec: dict):
        transformer = SignalTransformer(spec)

        def encode(batches):
            import pyarrow as pa

            for rb in batches:
                x = np.asarray(rb.column("values").flatten().to_numpy(), np.float32).reshape(rb.num_rows, -1)
                z = transformer.encode(x) if rb.num_rows else np.zeros((0, LENGTH), np.float32)
                offsets = np.arange(0, z.size + 1, LENGTH, dtype=np.int32)
                yield pa.RecordBatch.from_arrays([pa.ListArray.from_arrays(pa.array(offsets),
                                                                           pa.array(z.reshape(-1)))], ["features"])

        return ["values"], encode, "features array<float>"

    def transformer(self, spec: dict):
        return SignalTransformer(spec)

    def describe(self, spec: dict) -> str:
        return f"length={spec['length']}"

    def evaluate(self, bundle, data, ev, family, references: bool = True) -> Evaluation:
        import torch

        tr = bundle.transformer
        x_enc, _ = data.read_encoded("test")
        real = tr.decode(x_enc)
        n = ev.num_rows or len(real)
        g = torch.Generator().manual_seed(ev.seed)
        fake = tr.decode(bundle.model.sample(n, g).numpy())
        rng = np.random.default_rng(ev.seed)  # the baseline: each position drawn on its own
        marg = real[rng.integers(0, len(real), size=(n, real.shape[1])), np.arange(real.shape[1])]
        ac_real = _autocorrelation(real)

        def moments(a):
            return np.abs(a.mean(0) - real.mean(0)).mean() + np.abs(a.std(0) - real.std(0)).mean()

        metrics = {"autocorrelation_error": float(np.abs(_autocorrelation(fake) - ac_real).mean()),
                   "moment_error": float(moments(fake)),
                   "baseline_marginals_autocorrelation_error": float(np.abs(_autocorrelation(marg) - ac_real).mean())}
        if family.can_score:
            metrics["test_neg_elbo_nats"] = float(bundle.model.score(torch.from_numpy(x_enc)).mean())
        return Evaluation(metrics, {}, tuple(metrics))

    def baseline_bounds(self, metrics, bundle, ev):
        """A model must keep more of the signals' shape than independent positions do."""
        return {}, {"autocorrelation_error": metrics["baseline_marginals_autocorrelation_error"]}

    def score_records(self, spark, cfg, datasets_dir: Path, inputs, bundle, work_dir: Path | None = None) -> ScoreJob:
        """Every signal of ``inputs`` (one .npz with ``x``), else of the ``sine`` set, with its
        negative ELBO."""
        path = Path(inputs[0]) if inputs else sine_file(datasets_dir)
        x = np.load(path)["x"]
        frame = spark.createDataFrame([(path.name, i, [float(v) for v in row]) for i, row in enumerate(x)],
                                      "source string, `index` bigint, values array<double>")

        def scorer(b, rb):
            import pyarrow as pa
            import torch

            values = np.asarray(rb.column("values").flatten().to_numpy(), np.float32).reshape(rb.num_rows, -1)
            score = b.model.score(torch.from_numpy(b.transformer.encode(values))).double().numpy()
            return pa.table({"source": rb.column("source"), "index": rb.column("index"), "score": score,
                             "reason": pa.nulls(rb.num_rows, pa.string())})

        return ScoreJob(frame, [str(path)], scorer, meaning="negative ELBO (nats per signal)")


SIGNAL = SignalKind()

"""What a data kind supplies to the five stages, and nothing more.

The stages (``gen_pipeline.stages``) own the flow, the engine sessions and every MLflow call.
A kind owns what differs between tables, images, signals...: its sources and parsing, its
fitted encoding and decoding (a *transformer*), its metrics and report pictures, its
per-epoch pictures and its batch scorer. A kind may build Spark DataFrames on a session the
stage hands it (reading sources, aggregating to fit its encoding) but never starts an engine
and never talks to MLflow.

Preprocess contract: ``read`` returns the raw records as a DataFrame with

- ``source`` (string, the input file), the kind's ``position`` column (bigint: a line or an
  image index), ``split_hint`` (string: ``train``/``test`` when the source says, else null),
- the kind's payload columns, and ``_reason`` (null for a usable record); or, with ``finish``,
  the records before a pass of the kind's that adds ``_reason`` and passes through the
  columns the stage adds (a table's validation: it keeps its records' raw text only for the
  records it rejects, the split having been hashed from that text already). ``finish(frame,
  folder)`` runs the pass at once, its tasks writing the judged records as Parquet under
  ``folder``, and returns them read back from there: the stage's later passes read those files
  instead of a Spark cache of the records (which the stage builds for a kind without ``finish``).

The stage splits (by the hint, else by a hash of ``split_columns``), writes the quarantine,
excludes ``train_where`` rows, asks ``fit`` for the spec, writes each split through
``encoder`` (and ``clean_columns``), reconciles the counts, and writes the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Metric:
    """A metric a kind reports: its name and whether lower values are better."""

    name: str
    lower_is_better: bool = False


@dataclass
class RawRecords:
    """What ``DataKind.read`` returns: the records, where they came from, and the kind's context."""

    name: str  # the dataset's name (manifest)
    frame: Any  # a Spark DataFrame (see the module docstring)
    inputs: list[dict]  # one dict per input file: path, bytes, and how it was fingerprinted
    context: dict = field(default_factory=dict)  # kind-specific facts the fit needs (image shape, classes)
    finish: Callable[[Any, Path], Any] | None = None  # (frame with split and key, folder) -> records with ``_reason``


@dataclass
class Evaluation:
    """What ``DataKind.evaluate`` returns for one model."""

    metrics: dict[str, float]
    # name -> function(folder) that writes the artifact file(s) and returns their paths
    artifacts: dict[str, Callable[[Path], list[Path]]] = field(default_factory=dict)
    summary_keys: tuple[str, ...] = ()  # the metrics the one-line summary shows first
    lines: list[str] = field(default_factory=list)  # more lines the evaluate stage prints


@dataclass
class ScoreJob:
    """What ``DataKind.score_records`` hands the score stage."""

    frame: Any  # a Spark DataFrame of raw records to score
    inputs: list[str]  # what was read, for the lineage
    scorer: Callable  # (bundle, Arrow RecordBatch of ``frame``) -> scored Arrow table
    labels: list[str] = field(default_factory=list)  # 0/1 columns the scores are ranked against (ROC-AUC)
    columns: tuple[str, ...] = ("score",)  # the score columns summarised
    meaning: str = ""  # what the score is
    lineage: dict = field(default_factory=dict)


class DataKind:
    """The interface; ``kinds/table``, ``kinds/image`` and ``kinds/signal`` implement it."""

    name: str = ""
    datasets: tuple[str, ...] = ()
    metrics: tuple[Metric, ...] = ()
    default_primary_metric: str = ""
    position: str = "line"  # the raw record's position column in its source
    split_columns: tuple[str, ...] = ()  # what the split hash reads (identical records, same split)
    quarantine_columns: tuple[str, ...] = ()  # written beside the reason for each bad record
    default_min_steps: int = 0  # train.min_steps when the config leaves it unset
    default_cpu_precision: str = "fp32"  # train.cpu_precision when the config leaves it unset
    reason_group: str = r"^(.*)$"  # the part of a reason the manifest counts by

    # ---- preprocess ------------------------------------------------------------------------
    def read(self, spark, cfg, datasets_dir: Path, work_dir: Path) -> RawRecords:
        """The configured source's raw records (``work_dir``: what the kind keeps between runs,
        such as a user table's inferred schema file, ``layout.RunLayout.schema_file``)."""
        raise NotImplementedError

    def fit(self, spark, good, records: RawRecords, cfg) -> dict:
        """The encoding's spec (a small versioned JSON), fitted from Spark aggregates of ``good``."""
        raise NotImplementedError

    def encoder(self, spec: dict) -> tuple[list[str], Callable, str]:
        """(input columns, a mapInArrow function, its output DDL) that encodes a split."""
        raise NotImplementedError

    def clean_columns(self, spec: dict) -> list[str] | None:
        """Columns written as typed rows in the original schema (``clean/<split>``), or None."""
        return None

    def manifest_extras(self, spark, good, spec: dict, records: RawRecords) -> dict:
        return {}

    def extra_files(self, spec: dict, records: RawRecords) -> dict[str, dict]:
        """JSON files written beside the spec and manifest (the table's ``schema.json``)."""
        return {}

    def describe(self, spec: dict) -> str:
        """A few words on the fitted encoding for the preprocess line."""
        return ""

    def transformer(self, spec: dict):
        """The fitted encoding as an object: spans, output_dim, schema, transform, draw, to_arrow."""
        raise NotImplementedError

    # ---- train -----------------------------------------------------------------------------
    def prepare_training(self, data, cfg) -> None:
        """Anything evaluation yardsticks need before training (the image classifier)."""

    def finish_bundle(self, bundle, cfg):
        """After training, on the driver: the bundle to register, with anything fitted on the
        trained model's own samples (the table kind's marginal calibration); default unchanged."""
        return bundle

    def epoch_pictures(self, model, transformer, data, epoch: int, folder: Path) -> tuple[list[Path], dict]:
        """Rank 0, end of each epoch: picture files to log and extra metrics."""
        return [], {}

    # ---- evaluate --------------------------------------------------------------------------
    def evaluate(self, bundle, data, ev, family, references: bool = True) -> Evaluation:
        """The kind's metrics for ``bundle`` on the held-out data; with ``references`` also the
        trivial baselines (computed once per evaluation, for the candidate)."""
        raise NotImplementedError

    def baseline_bounds(self, metrics: dict[str, float], bundle, ev) -> tuple[dict, dict]:
        """Default bounds from a trivial baseline measured in the same evaluation:
        (minimums, maximums) by metric name, used when the config sets none for that metric."""
        return {}, {}

    # ---- generate and score ----------------------------------------------------------------
    def lineage(self, transformer) -> dict:
        """What a reader of the generated files needs to know beyond the column names."""
        return {}

    def after_generate(self, out: Path, transformer) -> None:
        """A quick look at the output (the image kind writes ``_preview.png``)."""

    def score_records(self, spark, cfg, datasets_dir: Path, inputs: list[str] | None, bundle,
                      work_dir: Path | None = None) -> ScoreJob:
        """The records to score (``inputs``, else the dataset's held-out records) and the scorer
        (``work_dir``: where the run's preprocess output is, ``layout.RunLayout``)."""
        raise NotImplementedError

    def lower_is_better(self, metric: str) -> bool:
        return any(m.name == metric and m.lower_is_better for m in self.metrics)

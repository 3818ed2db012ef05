"""The table kind: CSV-like files read on Spark, a fitted per-column encoding, SDMetrics quality,
detection, train-on-synthetic efficacy and privacy metrics, and row scoring."""

from __future__ import annotations

from pathlib import Path

from gen_pipeline.kinds.base import DataKind, Evaluation, Metric, RawRecords, ScoreJob

# Rows of the train split evaluation reads (the exact-copy and DCR reference, TRTR's training
# set). The clean split's files are ordered by a hash of each row, so their head is a uniform sample.
TRAIN_REFERENCE_ROWS = 200_000
# When the config sets no bound of its own, a model must be clearly better than rows drawn column
# by column from the real marginals (every relation between columns gone), scored the same way in
# the same evaluation: a train-on-synthetic AUC this much above theirs, and (with or without a
# target) a gradient-boosted detection AUC below theirs.
BASELINE_TSTR_AUC_MARGIN = 0.05
# Rows the trained model generates to fit its marginal calibration (model.calibrate_marginals):
# the quantile tables have 201 points by default, so each knot rests on about 250 rows.
CALIBRATION_ROWS = 50_000


class TableKind(DataKind):
    name = "table"
    metrics = (
        Metric("quality_score"), Metric("column_shapes"), Metric("column_pair_trends"),
        Metric("quality_score_all_pairs"), Metric("column_pair_trends_all_pairs"),
        Metric("detection_auc_gbt", lower_is_better=True), Metric("tstr_auc_gbt"),
        Metric("detection_auc", lower_is_better=True), Metric("association_diff_mean", lower_is_better=True),
        Metric("tstr_f1_mean"), Metric("tstr_accuracy_mean"), Metric("exact_copy_share", lower_is_better=True),
        Metric("dcr_median"), Metric("test_neg_elbo_nats", lower_is_better=True),
    )
    default_primary_metric = "quality_score"
    position = "line"
    # A small table still gets enough optimizer steps (train.min_steps): a few thousand rows at
    # batch 500 on 2 workers are 2-3 steps a pass, and 30 epochs of them learned nothing better
    # than independent marginals (benchmarks/RESULTS.md, real tables through --data).
    default_min_steps = 2000
    split_columns = ("text",)
    quarantine_columns = ("source", "line", "text")

    @property
    def datasets(self) -> tuple[str, ...]:
        from gen_pipeline.kinds.table.datasets import DATASETS

        return tuple(DATASETS)

    # ---- preprocess ------------------------------------------------------------------------
    def read(self, spark, cfg, datasets_dir: Path, work_dir: Path) -> RawRecords:
        from gen_pipeline.kinds.table.datasets import raw_table

        if cfg.data.source:  # your own table: its schema given, saved by an earlier run, or inferred now
            from gen_pipeline.kinds.table.inference import source_table

            return self.read_files(spark, cfg, source_table(cfg, spark, work_dir))
        return self.read_files(spark, cfg, raw_table(cfg.data.dataset, datasets_dir))

    def read_files(self, spark, cfg, table) -> RawRecords:
        """The records of a ``RawTable``'s files (the bundled sets, or files a test writes)."""
        from pyspark.sql import functions as F

        from gen_pipeline.kinds.table.sources import read_records

        records, validate, inputs = read_records(spark, table.source or list(table.files), table.schema,
                                                 cfg.data.max_rows_per_file)
        hint = F.lit(None).cast("string")
        if cfg.data.split == "files" and table.test_files:
            hint = F.when(F.col("source").isin(*table.test_files), "test").otherwise("train")
        context, summaries = {"schema": table.schema}, None
        if not cfg.data.train_where:  # the fit reads every usable record (in train_fraction's share)
            from gen_pipeline.kinds.table.fitting import PartitionSummaries, Summaries, sampled_columns

            t = cfg.transform
            sampled = sampled_columns(table.schema, t.continuous, t.discrete_values, t.lookup_columns)
            context["summaries"] = spark.sparkContext.accumulator({}, Summaries(t.vgm_sample_rows))
            summaries = (PartitionSummaries(table.schema, sampled=sampled, sample_rows=t.vgm_sample_rows),
                         context["summaries"])

        def finish(df, folder):  # the validation pass, run now into ``folder``
            validated, context["partitions"] = validate(df, summaries, into=folder)
            return validated
        return RawRecords(table.name, records.withColumn("split_hint", hint), inputs, context, finish=finish)

    def fit(self, spark, good, records: RawRecords, cfg) -> dict:
        from gen_pipeline.kinds.table.fitting import SAMPLE, fit_spec

        t = cfg.transform
        print(f"[preprocess] fitting transforms from Spark aggregates ({t.continuous})", flush=True)
        made = records.context["summaries"].value if "summaries" in records.context else {}
        # the validation pass's summaries, when every partition's task made one (else the fit makes its own)
        whole = sorted(k for k in made if k != SAMPLE) == list(range(records.context.get("partitions", -1)))
        return fit_spec(good, records.context["schema"], t.continuous, t.num_quantiles, t.vgm_sample_rows,
                        t.vgm_point_share, t.max_categories, t.discrete_values, t.lookup_columns,
                        made if whole else None)

    def encoder(self, spec: dict):
        def encode(batches):  # typed rows -> ``features`` list<float32>; encoding never drops a row
            import pyarrow as pa

            transformer = self.transformer(spec)
            for rb in batches:
                x, _ = transformer.transform(rb.to_pandas(), strict=True)
                values = pa.array(x.reshape(-1), type=pa.float32())
                offsets = pa.array(range(0, x.size + 1, x.shape[1]), type=pa.int32())
                yield pa.RecordBatch.from_arrays([pa.ListArray.from_arrays(offsets, values)], names=["features"])

        return self.transformer(spec).schema.names, encode, "features array<float>"

    def clean_columns(self, spec: dict) -> list[str]:
        return self.transformer(spec).schema.names

    def manifest_extras(self, spark, out, spec: dict, records: RawRecords) -> dict:
        t = self.transformer(spec)
        return {"encoded_dim": t.output_dim, "columns": t.schema.names}

    def extra_files(self, spec: dict, records: RawRecords) -> dict[str, dict]:
        from gen_pipeline.layout import SCHEMA_FILE

        return {SCHEMA_FILE: records.context["schema"].to_dict()}

    def describe(self, spec: dict) -> str:
        return f"encoded_dim={self.transformer(spec).output_dim}"

    def transformer(self, spec: dict):
        from gen_pipeline.kinds.table.transforms import TableTransformer

        return TableTransformer(spec)

    # ---- train -----------------------------------------------------------------------------
    def finish_bundle(self, bundle, cfg):
        """With ``model.calibrate_marginals``: each continuous column's generated values mapped
        monotonically onto its training quantiles and, for families whose categories are drawn
        from their logits outside the model, each category's share (and each null share) matched
        to its training frequency (``TableTransformer.calibrated``), fitted on CALIBRATION_ROWS
        rows the trained model draws with the training seed."""
        if not cfg.model.calibrate_marginals:
            return bundle
        import numpy as np
        import torch

        from gen_pipeline.bundle import SAMPLE_CHUNK, ModelBundle

        g = torch.Generator().manual_seed(cfg.train.seed)
        xs, cs, drawn_here = [], [], True
        for done in range(0, CALIBRATION_ROWS, SAMPLE_CHUNK):
            x, codes = bundle.model.sample_drawn(min(SAMPLE_CHUNK, CALIBRATION_ROWS - done), generator=g)
            drawn_here = codes is None  # categories drawn from x's logits here, not inside the model
            cs.append((bundle.transformer.draw(x, g) if codes is None else codes).numpy())
            xs.append(x.numpy())
        spec = bundle.transformer.calibrated(np.concatenate(xs), np.concatenate(cs), logits=drawn_here)
        fitted = [c["name"] for c in spec["columns"] if "calibration" in c or "logit_offsets" in c]
        if not fitted:
            return bundle
        print(f"[train] marginals calibrated on {CALIBRATION_ROWS:,} generated rows: {', '.join(fitted)}", flush=True)
        return ModelBundle(bundle.config, spec, bundle.model.state_dict(), bundle.manifest)

    # ---- evaluate --------------------------------------------------------------------------
    def evaluate(self, bundle, data, ev, family, references: bool = True) -> Evaluation:
        from gen_pipeline.kinds.table.metrics import evaluate_bundle, evaluation_view, reference_metrics

        real = data.read_clean("test")
        real_train = data.read_clean("train", limit=TRAIN_REFERENCE_ROWS)
        # as many synthetic rows as the gradient-boosted protocol's real training rows, at least the test split's
        n = ev.num_rows or max(len(real), min(len(real_train), ev.gbt_max_rows))
        metrics, synth, schema = evaluate_bundle(bundle, real_train, real, n, ev.seed, ev.tstr_label,
                                                 ev.tstr_positive, ev.max_rows, ev.gbt_max_rows)
        _, (real_train, real) = evaluation_view(bundle.schema, real_train, real)  # as the metrics see them
        if references:  # the same for every model of this data: scored for the candidate only
            label = ev.tstr_label if ev.tstr_label in synth.columns else None
            holdout = None  # held-out rows no model trains on
            if ev.reference_rows and data.clean("validation").exists():
                holdout = evaluation_view(bundle.schema, data.read_clean("validation"))[1][0]
            metrics.update(reference_metrics(real_train, real, holdout, schema, label, max_rows=ev.max_rows,
                                             gbt_max_rows=ev.gbt_max_rows, seed=ev.seed))

        def report(folder: Path, title: str) -> list[Path]:
            from gen_pipeline.kinds.table.report import report_figures, report_html

            figures = report_figures(real, synth, schema, ev.max_rows, ev.seed)
            paths = []
            for name, fig in figures.items():  # marginals_real_vs_synthetic.png, association_difference.png
                fig.savefig(folder / f"{name}.png", dpi=80)
                paths.append(folder / f"{name}.png")
            (folder / "report.html").write_text(report_html(metrics, figures, title))  # closes the figures
            return [*paths, folder / "report.html"]

        shown = ("quality_score", "column_shapes", "column_pair_trends", "detection_auc", "tstr_f1_mean",
                 "trtr_f1_mean", "dcr_median", "dcr_holdout_median", "exact_copy_share", "test_neg_elbo_nats")
        shown += tuple(k for k in metrics if k.startswith("roc_auc_"))
        # the papers' three figures, each with the real held-out rows' and the independent marginals' beside it
        refs = " ".join(f"{k}={metrics[k]:.4f} (held-out {metrics.get(f'ref_holdout_{k}', float('nan')):.4f}, "
                        f"marginals {metrics.get(f'ref_marginals_{k}', float('nan')):.4f})"
                        for k in ("quality_score_all_pairs", "detection_auc_gbt", "tstr_auc_gbt") if k in metrics)
        refs += f" trtr_auc_gbt={metrics['trtr_auc_gbt']:.4f}" if "trtr_auc_gbt" in metrics else ""
        lines = [f"papers' protocol: {refs} ({metrics['report_seconds']:.0f} s"
                 f" + {metrics.get('reference_seconds', 0.0):.0f} s references)"] if references else []
        return Evaluation(metrics, {"report": report}, shown, lines)

    def baseline_bounds(self, metrics: dict[str, float], bundle, ev):
        """Better than independent marginals: a lower gradient-boosted detection AUC, and with a
        target a train-on-synthetic AUC ``BASELINE_TSTR_AUC_MARGIN`` above theirs."""
        minimums, maximums = {}, {}
        if "ref_marginals_detection_auc_gbt" in metrics:
            maximums["detection_auc_gbt"] = metrics["ref_marginals_detection_auc_gbt"]
        if "ref_marginals_tstr_auc_gbt" in metrics and "tstr_auc_gbt" in metrics:
            minimums["tstr_auc_gbt"] = min(1.0, metrics["ref_marginals_tstr_auc_gbt"] + BASELINE_TSTR_AUC_MARGIN)
        return minimums, maximums

    # ---- score -----------------------------------------------------------------------------
    def score_records(self, spark, cfg, datasets_dir: Path, inputs: list[str] | None, bundle,
                      work_dir: Path | None = None):
        """``inputs`` (any format preprocess reads, read with the model's own schema by Spark's
        readers), else the held-out records: for a user table (``data.source``) the test split
        of its preprocess output (``clean/test``: rows no model trained on, already typed), for a
        bundled table its test file."""
        from gen_pipeline.errors import PipelineError
        from gen_pipeline.kinds.table.datasets import raw_table
        from gen_pipeline.kinds.table.scoring import score_table
        from gen_pipeline.kinds.table.sources import read_table
        from gen_pipeline.layout import PreprocessOutput, RunLayout

        schema = bundle.schema
        if not inputs and cfg.data.source:  # your own table: its held-out test split
            test = PreprocessOutput(RunLayout(Path(work_dir or "work"), cfg.name).preprocess).clean("test")
            if not test.is_dir():
                raise PipelineError(f"{test}: no test split of {cfg.name} to score; run `gen-pipeline preprocess` "
                                    "first, or pass --input FILE")
            records, read = held_out_records(spark, test, schema), [str(test)]
        else:
            paths = list(inputs) if inputs else [str(raw_table(cfg.data.dataset, datasets_dir).files[-1])]
            records, listed = read_table(spark, paths, schema)  # typed by Spark's readers + the validation pass
            read = [i["path"] for i in listed]

        def scorer(b, rb):
            import pyarrow as pa

            return score_table(b, pa.Table.from_batches([rb]), schema)

        return ScoreJob(records, read, scorer, labels=schema.label_columns,
                        meaning="negative ELBO (nats per row)")


def held_out_records(spark, folder: Path, schema):
    """A clean split (typed rows in the original schema) as records to score, in the shape
    ``sources.read_table`` gives: ``source`` (the Parquet part), ``line`` (null: the rows were
    shuffled into the split), ``text`` (null), the columns, ``_reason`` (null: every row passed
    preprocess)."""
    from pyspark.sql import functions as F

    from gen_pipeline.kinds.table.schema import REASON

    df = spark.read.parquet(str(folder))
    missing = [c for c in schema.names if c not in df.columns]
    if missing:
        from gen_pipeline.errors import PipelineError

        raise PipelineError(f"{folder}: column {missing[0]!r} not found; the preprocess output is of another "
                            "schema than the model's: rerun `gen-pipeline preprocess`, or pass --input FILE")
    return df.select(F.col("_metadata.file_name").alias("source"), F.lit(None).cast("bigint").alias("line"),
                     F.lit(None).cast("string").alias("text"), *[F.col(f"`{n}`") for n in schema.names],
                     F.lit(None).cast("string").alias(REASON))


TABLE = TableKind()

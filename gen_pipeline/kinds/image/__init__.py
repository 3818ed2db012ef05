"""The image kind: image sets decoded on Spark (idx.gz, PNG folders, .npz), pixels scaled to
[0, 1] with the class label one-hot, FID on the pipeline's own classifier, conditional accuracy
and test ELBO, sample grids, and per-image anomaly scores."""

from __future__ import annotations

import json
from pathlib import Path

from gen_pipeline.kinds.base import DataKind, Evaluation, Metric, RawRecords, ScoreJob


class ImageKind(DataKind):
    name = "image"
    datasets = ("fashion_mnist", "digits", "image_folder", "image_npz")
    metrics = (Metric("fid", lower_is_better=True), Metric("conditional_accuracy"),
               Metric("test_neg_elbo_nats", lower_is_better=True), Metric("test_bits_per_dim", lower_is_better=True))
    default_primary_metric = "fid"
    position = "index"
    split_columns = ("source", "index")
    quarantine_columns = ("source", "index", "label")
    reason_group = r"^([^:(]*)"  # "wrong size", "unreadable image", ...
    default_min_steps = 4000  # a small image set still gets enough optimizer steps (train.min_steps)
    default_cpu_precision = "bf16"  # convolutions: bf16 autocast where the CPU has it natively

    # ---- preprocess ------------------------------------------------------------------------
    def read(self, spark, cfg, datasets_dir: Path, work_dir: Path) -> RawRecords:
        from pyspark.sql import functions as F

        from gen_pipeline.kinds.image.sources import RAW_DDL, decode_unit, image_source
        from gen_pipeline.stages.preprocess import file_listing

        source = image_source(cfg, datasets_dir)
        size, classes, channels = source.size, source.classes, source.channels

        def decode(batches):
            import pyarrow as pa

            schema = pa.schema([("source", pa.string()), ("index", pa.int64()), ("split_hint", pa.string()),
                                ("label", pa.int32()), ("pixels", pa.binary()), ("reason", pa.string())])
            for rb in batches:
                for u in rb.column(0).to_pylist():
                    rows = decode_unit(json.loads(u), size, classes, channels)
                    yield pa.RecordBatch.from_arrays([pa.array(c, type=t) for c, t in
                                                      zip(zip(*rows), schema.types)], schema=schema)

        units = [json.dumps(u) for u in source.units]
        raw = spark.createDataFrame([(u,) for u in units], "unit string").repartition(max(1, len(units)))
        frame = raw.mapInArrow(decode, RAW_DDL).withColumnRenamed("reason", "_reason")
        # An idx file's own train/test split wins (Fashion-MNIST's official test set); "" means none.
        frame = frame.withColumn("split_hint", F.when(F.col("split_hint") != "", F.col("split_hint")))
        return RawRecords(source.name, frame, file_listing(source.files[:10_000]), {"source": source})

    def fit(self, spark, good, records: RawRecords, cfg) -> dict:
        from gen_pipeline.kinds.image.transform import IMAGE_SPEC_VERSION, PIXEL_MAX
        from gen_pipeline.spans import image_hw

        source = records.context["source"]
        layout = "row-major pixels, then the label one-hot" if source.channels == 1 else \
            "channel planes (R, G, B), each row-major, then the label one-hot"
        return {"version": IMAGE_SPEC_VERSION, "kind": "image", "dataset": source.name,
                "shape": [source.channels, *image_hw(source.size)], "layout": layout,
                "pixel_scale": {"encoded": "pixel / 255", "inverse": "clip(round(x * 255), 0, 255) as uint8",
                                "max": PIXEL_MAX},
                "classes": list(source.classes)}

    def encoder(self, spec: dict):
        import numpy as np

        transformer = self.transformer(spec)

        def encode(batches):
            import pyarrow as pa

            for rb in batches:
                n = rb.num_rows
                pix = np.frombuffer(b"".join(rb.column("pixels").to_pylist()), dtype=np.uint8).reshape(n, -1) \
                    if n else np.zeros((0, transformer.image_dim), np.uint8)
                labels = rb.column("label").to_pylist()
                x = transformer.encode(pix, labels)
                values = pa.array(x.reshape(-1), type=pa.float32())
                offsets = pa.array(np.arange(0, x.size + 1, x.shape[1], dtype=np.int32))
                lab = pa.array([-1 if v is None else v for v in labels], type=pa.int32())
                yield pa.RecordBatch.from_arrays([pa.ListArray.from_arrays(offsets, values), lab],
                                                 names=["features", "label"])

        return ["pixels", "label"], encode, "features array<float>, label int"

    def manifest_extras(self, spark, out, spec: dict, records: RawRecords) -> dict:
        from gen_pipeline.layout import SPLITS

        label_counts = {}
        for s in SPLITS:
            counts = spark.read.parquet(str(out.encoded(s))).groupBy("label").count().collect()
            label_counts[s] = {str(r["label"]): r["count"] for r in sorted(counts, key=lambda r: r["label"])}
        t = self.transformer(spec)
        return {"label_counts": label_counts, "encoded_dim": t.output_dim, "image_shape": spec["shape"],
                "classes": spec["classes"]}

    def describe(self, spec: dict) -> str:
        return f"shape={'x'.join(map(str, spec['shape']))} classes={len(spec['classes'])}"

    def transformer(self, spec: dict):
        from gen_pipeline.kinds.image.transform import ImageTransformer

        return ImageTransformer(spec)

    # ---- train -----------------------------------------------------------------------------
    def prepare_training(self, data, cfg) -> None:
        if len(data.manifest["classes"]) > 1:  # rank 0 logs FID per epoch with it
            from gen_pipeline.kinds.image.metrics import ensure_classifier

            ensure_classifier(data, cfg.evaluate.classifier_epochs)

    def epoch_pictures(self, model, transformer, data, epoch: int, folder: Path):
        from gen_pipeline.kinds.image.pictures import epoch_pictures

        return epoch_pictures(model, transformer, data, epoch, folder)

    # ---- evaluate --------------------------------------------------------------------------
    def evaluate(self, bundle, data, ev, family, references: bool = True) -> Evaluation:
        from gen_pipeline.kinds.image.metrics import image_report

        metrics, clf = image_report(bundle, data, ev.num_rows, ev.seed, ev.classifier_epochs, family.can_score)

        def grid(folder: Path, title: str) -> list[Path]:
            from gen_pipeline.kinds.image.pictures import class_grid, grid_png

            images = class_grid(bundle.model, bundle.transformer, 10, ev.seed, clf)
            return [grid_png(images, folder / "final_grid_per_class.png")]

        shown = tuple(k for k in metrics if not k.startswith("conditional_accuracy_"))
        return Evaluation(metrics, {"grid": grid}, shown)

    def baseline_bounds(self, metrics: dict[str, float], bundle, ev):
        """A conditional model: conditional accuracy at least twice chance; an unconditional one:
        FID below that of images drawn pixel by pixel from the real pixels' marginals."""
        if "conditional_accuracy" in metrics:
            return {"conditional_accuracy": 2 * metrics["baseline_chance_accuracy"]}, {}
        return {}, {"fid": metrics["baseline_pixel_marginals_fid"]}

    # ---- generate and score ----------------------------------------------------------------
    def lineage(self, transformer) -> dict:
        layout = "row-major" if transformer.channels == 1 else "row-major, channels last (R, G, B)"
        return {"image": {"column": "image", "dtype": "uint8", "shape": list(transformer.image_shape),
                          "layout": layout, "label": "condition class (null: unconditional model)",
                          "classes": transformer.classes}}

    def after_generate(self, out: Path, transformer) -> None:
        from gen_pipeline.kinds.image.pictures import preview_grid

        preview_grid(out, transformer)  # a PNG grid of the first rows, for a quick look

    def score_records(self, spark, cfg, datasets_dir: Path, inputs: list[str] | None, bundle,
                      work_dir: Path | None = None) -> ScoreJob:
        from gen_pipeline.errors import PipelineError
        from gen_pipeline.kinds.image.scoring import image_scorer, normal_classes, score_inputs
        from gen_pipeline.kinds.image.sources import image_source

        tr = bundle.transformer
        source = score_inputs(image_source(cfg, datasets_dir), inputs, tr.size, tr.channels)
        units = [json.dumps(u) for u in source.units]
        if not units:
            raise PipelineError(f"{source.name}: no images to score")
        normal = normal_classes(bundle.manifest)
        frame = spark.createDataFrame([(u,) for u in units], "unit string").repartition(len(units))
        one_class = 0 < len(normal) < len(tr.classes)
        scorer = image_scorer(tr.size, tuple(tr.classes), normal, tr.channels)
        return ScoreJob(frame, [str(f) for f in source.files], scorer,
                        labels=["anomaly"] if one_class else [], columns=("score", "neg_elbo"),
                        meaning="negative ELBO above the image's Bernoulli entropy floor (nats per image)",
                        lineage={"normal_classes": normal})


IMAGE = ImageKind()

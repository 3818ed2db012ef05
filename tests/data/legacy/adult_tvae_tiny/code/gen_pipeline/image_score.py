"""Score images (Spark): raw images -> each with its anomaly score and the VAE's negative ELBO.

``score`` is the negative ELBO above the image's own floor (``ConvVAE.nll_floor``: what a
Bernoulli likelihood charges for grey pixels however well they are predicted); ``neg_elbo`` is
the plain negative ELBO, kept beside it. Both in nats per image, posterior-mean decode.

The images are decoded by the same readers as preprocess, so a wrong-size, unreadable or
corrupt image is written with a ``reason`` and a null score instead of failing the job:
rows in == rows scored + rows rejected. One-class anomaly detection: a model trained on some
classes only (``data.train_where: "label = 0"``) scores every test image, and ROC-AUC says how
well the score ranks the classes it never saw (the anomalies) above the one it learned.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from gen_pipeline.errors import PipelineError
from gen_pipeline.generate import broadcast_bundle, bundle_on_worker
from gen_pipeline.images import ImageSource, decode_unit, npz_source, folder_source
from gen_pipeline.storage import commit, staging_dir, write_json

OUT_DDL = "source string, `index` bigint, label int, score double, neg_elbo double, anomaly int, reason string"


def score_inputs(source: ImageSource, inputs: list[str] | None, size: int) -> ImageSource:
    """What to score: ``--input`` (a PNG folder or an .npz), else the dataset's test images."""
    if inputs:
        if len(inputs) != 1:
            raise PipelineError("--input: give one PNG folder or one .npz file for an image model")
        p = Path(inputs[0])
        return npz_source(p, size) if p.suffix == ".npz" else folder_source(p, size)
    test = tuple(u for u in source.units if u.get("hint") == "test")
    return dataclasses.replace(source, units=test) if test else source


def normal_classes(manifest: dict) -> list[int]:
    """The classes the model was trained on (those with rows in the train split)."""
    counts = manifest.get("label_counts", {}).get("train", {})
    return sorted(int(k) for k, v in counts.items() if v and int(k) >= 0)


def run_image_score(spark, bundle, source: ImageSource, *, out: Path, lineage: dict) -> dict:
    from pyspark.sql import functions as F

    if not hasattr(bundle.model, "elbo"):
        raise PipelineError(f"model family {bundle.config.model.family!r} has no anomaly score; "
                            "score with a VAE (model.family=conv_vae)")
    tr = bundle.transformer
    size, classes = tr.size, tuple(tr.classes)
    normal = normal_classes(bundle.manifest)
    one_class = 0 < len(normal) < len(classes)
    bc, key = broadcast_bundle(spark, bundle)

    def score(batches):
        import pyarrow as pa
        import torch

        b = bundle_on_worker(bc, key)
        for rb in batches:
            for u in rb.column(0).to_pylist():
                rows = decode_unit(json.loads(u), size, classes)
                good = [i for i, r in enumerate(rows) if r[5] is None]
                scores, elbos = [None] * len(rows), [None] * len(rows)
                if good:
                    pix = np.frombuffer(b"".join(rows[i][4] for i in good), np.uint8).reshape(len(good), -1)
                    x = torch.from_numpy(b.transformer.encode(pix, [rows[i][3] for i in good]))
                    s, neg = (t.double().numpy() for t in b.model.score_and_neg_elbo(x))
                    for i, v, e in zip(good, s, neg):
                        scores[i], elbos[i] = float(v), float(e)
                labels = [r[3] for r in rows]
                anomaly = [None if (lab is None or not one_class) else int(lab not in normal) for lab in labels]
                yield pa.RecordBatch.from_arrays([
                    pa.array([r[0] for r in rows]), pa.array([r[1] for r in rows], pa.int64()),
                    pa.array(labels, pa.int32()), pa.array(scores, pa.float64()), pa.array(elbos, pa.float64()),
                    pa.array(anomaly, pa.int32()), pa.array([r[5] for r in rows], pa.string())],
                    names=["source", "index", "label", "score", "neg_elbo", "anomaly", "reason"])

    units = [json.dumps(u) for u in source.units]
    if not units:
        raise PipelineError(f"{source.name}: no images to score")
    stage = staging_dir(out)
    t0 = time.perf_counter()
    df = spark.createDataFrame([(u,) for u in units], "unit string").repartition(len(units))
    df.mapInArrow(score, OUT_DDL).write.mode("overwrite").parquet(str(stage))
    scored = spark.read.parquet(str(stage))
    counts = scored.agg(F.count(F.lit(1)).alias("rows"), F.count("score").alias("scored")).first()
    rows_in, scored_n = int(counts["rows"]), int(counts["scored"])
    auc = auc_neg_elbo = None
    if one_class:
        from pyspark.ml.evaluation import BinaryClassificationEvaluator

        labelled = scored.where(F.col("score").isNotNull() & F.col("anomaly").isNotNull()) \
            .select("score", "neg_elbo", F.col("anomaly").cast("double").alias("label")).cache()
        if labelled.select("label").distinct().count() == 2:
            auc, auc_neg_elbo = (BinaryClassificationEvaluator(rawPredictionCol=c, labelCol="label",
                                                               metricName="areaUnderROC").evaluate(labelled)
                                 for c in ("score", "neg_elbo"))
        labelled.unpersist()
    lineage = {**lineage, "inputs": [str(f) for f in source.files], "rows_in": rows_in, "rows_scored": scored_n,
               "rows_rejected": rows_in - scored_n,
               "score": "negative ELBO above the image's Bernoulli entropy floor (nats per image)",
               "normal_classes": normal, "roc_auc_anomaly": auc, "roc_auc_anomaly_neg_elbo": auc_neg_elbo,
               "seconds": round(time.perf_counter() - t0, 2)}
    write_json(stage / "_lineage.json", lineage)
    commit(stage, out)
    bc.unpersist()
    print(f"[score] images in={rows_in:,} scored={scored_n:,} rejected={rows_in - scored_n:,}"
          + (f" roc_auc_anomaly={auc:.4f} (plain negative ELBO: {auc_neg_elbo:.4f}; normal classes {normal})"
             if auc is not None else "")
          + f" -> {out}", flush=True)
    return lineage

"""Scoring images: raw images -> each with its anomaly score and the VAE's negative ELBO.

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
from pathlib import Path

import numpy as np

from gen_pipeline.errors import PipelineError
from gen_pipeline.kinds.image.sources import ImageSource, decode_unit, folder_source, npz_source


def score_inputs(source: ImageSource, inputs: list[str] | None, size: int | tuple[int, int],
                 channels: int = 1) -> ImageSource:
    """What to score: ``--input`` (a PNG folder or an .npz), else the dataset's test images; read
    at the model's size (H, W) and channel count (``image_scorer`` converts each image to it)."""
    if inputs:
        if len(inputs) != 1:
            raise PipelineError("--input: give one PNG folder or one .npz file for an image model")
        p = Path(inputs[0])
        return npz_source(p, size, channels) if p.suffix == ".npz" else folder_source(p, size, channels)
    test = tuple(u for u in source.units if u.get("hint") == "test")
    return dataclasses.replace(source, units=test) if test else source


def normal_classes(manifest: dict) -> list[int]:
    """The classes the model was trained on (those with rows in the train split)."""
    counts = manifest.get("label_counts", {}).get("train", {})
    return sorted(int(k) for k, v in counts.items() if v and int(k) >= 0)


def image_scorer(size: int | tuple[int, int], classes: tuple[str, ...], normal: list[int], channels: int = 1):
    """(bundle, a batch of work units) -> the units' images scored: source, index, label, score,
    neg_elbo, anomaly (1 = a class the model never saw; null unless a one-class model), reason.
    Each image is decoded to the model's ``channels`` (grey repeated into RGB, RGB to grey luma)."""
    one_class = 0 < len(normal) < len(classes)

    def score(b, rb):
        import pyarrow as pa
        import torch

        rows = [r for u in rb.column(0).to_pylist() for r in decode_unit(json.loads(u), size, classes, channels)]
        good = [i for i, r in enumerate(rows) if r[5] is None]
        scores, elbos = [None] * len(rows), [None] * len(rows)
        if good:
            pix = np.frombuffer(b"".join(rows[i][4] for i in good), np.uint8).reshape(len(good), -1)
            x = torch.from_numpy(b.transformer.encode(pix, [rows[i][3] for i in good]))
            cols = b.model.score_columns(x)
            for i, v, e in zip(good, cols["score"].double().numpy(), cols["neg_elbo"].double().numpy()):
                scores[i], elbos[i] = float(v), float(e)
        labels = [r[3] for r in rows]
        anomaly = [None if (lab is None or not one_class) else int(lab not in normal) for lab in labels]
        return pa.Table.from_arrays([
            pa.array([r[0] for r in rows], pa.string()), pa.array([r[1] for r in rows], pa.int64()),
            pa.array(labels, pa.int32()), pa.array(scores, pa.float64()), pa.array(elbos, pa.float64()),
            pa.array(anomaly, pa.int32()), pa.array([r[5] for r in rows], pa.string())],
            names=["source", "index", "label", "score", "neg_elbo", "anomaly", "reason"])

    return score

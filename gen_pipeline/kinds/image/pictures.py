"""Pictures of image models for a person to look at: sample grids (per epoch, per class) and
the preview beside generated images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from gen_pipeline.kinds.image.metrics import Classifier, classifier_for, frechet_distance, predict
from gen_pipeline.layout import PREVIEW_FILE, PreprocessOutput


def grid_png(images: np.ndarray, path: Path, ncols: int = 10, scale: int = 2, pad: int = 2) -> Path:
    """uint8 images (N, H, W) grey or (N, H, W, 3) RGB -> one PNG grid (mode L or RGB), ``ncols``
    per row, scaled up for a person to look at."""
    from PIL import Image

    n, h, w = images.shape[:3]
    nrows = max(1, math.ceil(n / ncols))
    canvas = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad) + images.shape[3:], 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, ncols)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = im
    img = Image.fromarray(canvas, "RGB" if canvas.ndim == 3 else "L")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    return Path(path)


MAX_GRID_ROWS = 20  # classes shown in a per-class grid; a set with more shows an evenly spaced sample


def shown_classes(k: int, max_rows: int = MAX_GRID_ROWS) -> np.ndarray:
    """The classes a per-class grid shows, one row each: all of them, or ``max_rows`` evenly
    spaced ones (first and last included) when there are more."""
    if k <= max_rows:
        return np.arange(k)
    return np.unique(np.rint(np.linspace(0, k - 1, max_rows)).astype(np.int64))


def class_grid(model, transformer, per_class: int, seed: int, clf: Classifier | None = None) -> np.ndarray:
    """Images (K * per_class, H, W[, C]), one row per class: drawn with that condition when the model
    is conditional, else unconditional samples sorted into rows by the classifier's prediction."""
    g = torch.Generator().manual_seed(seed)
    k = transformer.num_classes
    if model.conditional:
        labels = torch.from_numpy(shown_classes(k)).repeat_interleave(per_class)
        return transformer.pixels(model.sample(len(labels), generator=g, fixed={transformer.label_start: labels}).numpy())
    x = model.sample(max(per_class * k * 6, 200), generator=g).numpy()
    if clf is None or not k:
        return transformer.pixels(x[:per_class * max(k, 1)])
    pred = predict(clf, x)[1]
    rows = []
    for c in shown_classes(k):
        pick = x[pred == c][:per_class]
        pick = np.concatenate([pick, np.zeros((per_class - len(pick), x.shape[1]), np.float32)])  # blanks
        rows.append(pick)
    return transformer.pixels(np.concatenate(rows))


_REAL_FEATURES: dict[str, np.ndarray] = {}


def epoch_pictures(model, transformer, data: PreprocessOutput, epoch: int, folder: Path,
                   n_fid: int = 2000) -> tuple[list[Path], dict[str, float]]:
    """Rank 0, end of each epoch: a sample grid (fixed seed; a conditional model's has one row of
    10 per class, as ``class_grid`` lays it out) and, when the pipeline's classifier exists, FID
    on ``n_fid`` samples against the real test split (``fid_2k``)."""
    g = torch.Generator().manual_seed(0)
    if model.conditional:
        labels = torch.from_numpy(shown_classes(transformer.num_classes)).repeat_interleave(10)
        x = model.sample(len(labels), generator=g, fixed={transformer.label_start: labels})
    else:
        x = model.sample(100, generator=g)
    grid = grid_png(transformer.pixels(x.cpu().numpy()), folder / f"epoch_{epoch:03d}.png")
    clf = classifier_for(data, transformer)
    if clf is None:
        return [grid], {}
    key = str(data.root)
    if key not in _REAL_FEATURES:
        x, _ = data.read_encoded("test", limit=n_fid)
        _REAL_FEATURES[key] = predict(clf, x)[0].astype(np.float64)
    fake = model.sample(n_fid, generator=torch.Generator().manual_seed(1)).cpu().numpy()
    return [grid], {"fid_2k": frechet_distance(_REAL_FEATURES[key], predict(clf, fake)[0].astype(np.float64))}


def preview_grid(out: Path, transformer, n: int = 100, per_class: int = 10, scan: int = 20_000) -> Path:
    """``_preview.png`` beside the generated Parquet. Labelled images: one row per class (up to
    ``MAX_GRID_ROWS`` classes, evenly spaced when there are more), the first ``per_class``
    images of that class among the first ``scan`` rows, a short row left blank, so a model
    that draws one shape for every class shows it at a glance. Unlabelled: the first ``n``
    rows, 10 per row."""
    import pyarrow.dataset as ds

    shape = transformer.image_shape
    table = ds.dataset(Path(out), format="parquet").head(scan if transformer.num_classes else n,
                                                         columns=["image", "label"])
    images = np.frombuffer(b"".join(table.column("image").to_pylist()), np.uint8).reshape((-1,) + shape)
    labels = table.column("label").to_numpy(zero_copy_only=False)
    labels = np.where(np.isnan(labels.astype(np.float64)), -1, labels).astype(np.int64)
    if not transformer.num_classes or (labels < 0).all():
        return grid_png(images[:n], Path(out) / PREVIEW_FILE)
    rows = []
    for c in shown_classes(transformer.num_classes):
        pick = images[labels == c][:per_class]
        rows.append(np.concatenate([pick, np.full((per_class - len(pick),) + shape, 255, np.uint8)]))
    return grid_png(np.concatenate(rows), Path(out) / PREVIEW_FILE, ncols=per_class)

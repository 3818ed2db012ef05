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
    """uint8 images (N, S, S) -> one PNG grid, ``ncols`` per row, scaled up for a person to look at."""
    from PIL import Image

    n, s = len(images), images.shape[1]
    nrows = max(1, math.ceil(n / ncols))
    canvas = np.full((nrows * (s + pad) + pad, ncols * (s + pad) + pad), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, ncols)
        canvas[pad + r * (s + pad): pad + r * (s + pad) + s, pad + c * (s + pad): pad + c * (s + pad) + s] = im
    img = Image.fromarray(canvas, "L")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    return Path(path)


def class_grid(model, transformer, per_class: int, seed: int, clf: Classifier | None = None) -> np.ndarray:
    """Images (K * per_class, S, S), one row per class: drawn with that condition when the model
    is conditional, else unconditional samples sorted into rows by the classifier's prediction."""
    g = torch.Generator().manual_seed(seed)
    k = transformer.num_classes
    if model.conditional:
        labels = torch.arange(k).repeat_interleave(per_class)
        return transformer.pixels(model.sample(len(labels), generator=g, fixed={transformer.label_start: labels}).numpy())
    x = model.sample(max(per_class * k * 6, 200), generator=g).numpy()
    if clf is None or not k:
        return transformer.pixels(x[:per_class * max(k, 1)])
    pred = predict(clf, x)[1]
    rows = []
    for c in range(k):
        pick = x[pred == c][:per_class]
        pick = np.concatenate([pick, np.zeros((per_class - len(pick), x.shape[1]), np.float32)])  # blanks
        rows.append(pick)
    return transformer.pixels(np.concatenate(rows))


_REAL_FEATURES: dict[str, np.ndarray] = {}


def epoch_pictures(model, transformer, data: PreprocessOutput, epoch: int, folder: Path,
                   n_fid: int = 2000) -> tuple[list[Path], dict[str, float]]:
    """Rank 0, end of each epoch: a 10x10 sample grid (fixed seed) and, when the pipeline's
    classifier exists, FID on ``n_fid`` samples against the real test split (``fid_2k``)."""
    images = transformer.pixels(model.sample(100, generator=torch.Generator().manual_seed(0)).cpu().numpy())
    grid = grid_png(images, folder / f"epoch_{epoch:03d}.png")
    clf = classifier_for(data, transformer)
    if clf is None:
        return [grid], {}
    key = str(data.root)
    if key not in _REAL_FEATURES:
        x, _ = data.read_encoded("test", limit=n_fid)
        _REAL_FEATURES[key] = predict(clf, x)[0].astype(np.float64)
    fake = model.sample(n_fid, generator=torch.Generator().manual_seed(1)).cpu().numpy()
    return [grid], {"fid_2k": frechet_distance(_REAL_FEATURES[key], predict(clf, fake)[0].astype(np.float64))}


def preview_grid(out: Path, transformer, n: int = 100) -> Path:
    """``_preview.png`` beside the generated Parquet: the first ``n`` rows as a 10-wide grid."""
    import pyarrow.dataset as ds

    table = ds.dataset(Path(out), format="parquet").head(n, columns=["image"])
    images = np.frombuffer(b"".join(table.column("image").to_pylist()), np.uint8).reshape(
        -1, transformer.size, transformer.size)
    return grid_png(images, Path(out) / PREVIEW_FILE)

"""A user's own small RGB image set through the whole pipeline, as JSON (benchmarks/RESULTS.md).

The set: ``--per-class`` RGB PNGs of ``--height`` x ``--width`` pixels (default 26 x 26) in three
class folders (flower, sky, temple), each a crop twice that size of one of scikit-learn's two
bundled sample photos (``load_sample_images``; nothing downloaded) scaled down by 2. 26 is not a
multiple of 4 and the images are in colour, so the run exercises the rule of README's "Your
images as they come": size and channels taken from the images, padding to 28 inside the conv
models, images generated at 26x26x3; ``--height 18 --width 30`` does the same for non-square
images (padded to 20 x 32 inside, generated at 18x30x3).

    .venv/bin/python benchmarks/rgb_patches.py --work-dir work/rgb_patches
    .venv/bin/python benchmarks/rgb_patches.py --work-dir work/rgb_patches --set model.family=conv_vae
    .venv/bin/python benchmarks/rgb_patches.py --work-dir work/rgb_wide --height 18 --width 30

Prints the evaluate report (FID on the pipeline's classifier, its floor ``fid_real_halves``,
conditional accuracy), the mean R, G, B per class of the real and the generated images, and the
preview's path (one row per class) for a person to look at.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLASSES = ("flower", "sky", "temple")
SIDE = 26  # the default height and width; crops are twice as large, scaled down by 2


def make_set(folder: Path, per_class: int, seed: int = 0, height: int = SIDE, width: int = SIDE) -> Path:
    """The PNG folder (rebuilt each time, so a run sees exactly these images)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images  # (427, 640, 3) uint8 each
    # (photo, crop corners: rows r0..r1, cols c0..c1), chosen by looking at the photos
    regions = {"flower": (flower, [(90, 280, 190, 380)]),  # the dahlia's petals
               "sky": (china, [(0, 100, 0, 190), (0, 80, 400, 585)]),  # above the temple, either side
               "temple": (china, [(30, 280, 190, 300)])}  # the pagoda's roofs and walls
    rng = np.random.default_rng(seed)
    for cls in CLASSES:
        photo, boxes = regions[cls]
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            r0, r1, c0, c1 = boxes[rng.integers(len(boxes))]
            r, c = rng.integers(r0, r1 + 1), rng.integers(c0, c1 + 1)
            r, c = min(r, photo.shape[0] - 2 * height), min(c, photo.shape[1] - 2 * width)  # inside the photo
            crop = Image.fromarray(photo[r:r + 2 * height, c:c + 2 * width])
            crop.resize((width, height), Image.LANCZOS).save(folder / cls / f"{i:04d}.png")
    return folder


CONFIG = """# A user's own small RGB set (benchmarks/rgb_patches.py): the side and channels come from the images.
name: rgb_patches
model_name: rgb_patches
data:
  dataset: image_folder
  path: {path}
  validation_fraction: 0.1
  test_fraction: 0.2
  num_files: 1
model:
  family: dcgan
  conditional: true
  latent_dim: 32
  base_channels: 16
train:
  epochs: 6
  min_steps: 1200
  batch_size: 64
  lr: 0.0005
  weight_decay: 0.0
  num_workers: 1
evaluate:
  primary_metric: fid
  classifier_epochs: 10
generate:
  rows: 3000
  seed: 7
  rows_per_partition: 1500
"""


def mean_rgb(images: np.ndarray) -> list[float]:
    return [round(float(v), 1) for v in images.reshape(-1, 3).mean(0)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work-dir", type=Path, default=Path("work/rgb_patches"))
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--height", type=int, default=SIDE, help="image height in pixels (>= 4)")
    ap.add_argument("--width", type=int, default=SIDE, help="image width in pixels (>= 4)")
    ap.add_argument("--set", action="append", default=[], help="config overrides, as for gen-pipeline run")
    args = ap.parse_args()

    import shutil

    import pyarrow.parquet as pq
    from PIL import Image

    from gen_pipeline.cli import main as cli

    work = args.work_dir.resolve()
    folder = work / "patches"
    shutil.rmtree(folder, ignore_errors=True)
    make_set(folder, args.per_class, height=args.height, width=args.width)
    config = work / "rgb_patches.yaml"
    config.write_text(CONFIG.format(path=folder))
    run = ["run", "--config", str(config), "--work-dir", str(work)]
    for s in args.set:
        run += ["--set", s]
    if cli(run) != 0:
        return 1

    import mlflow

    from gen_pipeline.config import load_config

    cfg = load_config(str(config), args.set)
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    versions = client.search_model_versions(f"name='{cfg.model_name}'")
    latest = max(versions, key=lambda v: int(v.version))
    metrics = client.get_run(latest.run_id).data.metrics
    out = work / "outputs" / cfg.name / "generated"
    table = pq.read_table(out)
    gen = np.frombuffer(b"".join(table.column("image").to_pylist()), np.uint8).reshape(-1, args.height, args.width, 3)
    labels = np.array(table.column("label").to_pylist(), dtype=float)
    colours = {}
    for i, cls in enumerate(CLASSES):
        real = np.stack([np.asarray(Image.open(f)) for f in sorted((folder / cls).glob("*.png"))])
        colours[cls] = {"real": mean_rgb(real), "generated": mean_rgb(gen[labels == i]) if (labels == i).any() else None}
    report = {"family": cfg.model.family, "model_version": latest.version, "images": args.per_class * len(CLASSES),
              "height_width": [args.height, args.width],
              "generated_shape": json.loads((out / "_lineage.json").read_text())["image"]["shape"],
              "evaluate": {k[5:]: round(v, 4) for k, v in sorted(metrics.items())
                           if k.startswith("eval_") and "accuracy_" not in k},
              "train_seconds": round(metrics.get("train_seconds", float("nan")), 1),
              "mean_rgb_per_class": colours, "preview": str(out / "_preview.png")}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

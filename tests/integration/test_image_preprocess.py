"""Image preprocess on Spark: a PNG folder (grey 8x8, and RGB 10x10 with the side and channels
taken from the images) and an .npz with bad images among good ones."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from gen_pipeline.config import load_config
from gen_pipeline.kinds.image.transform import ImageTransformer
from gen_pipeline.layout import PreprocessOutput
from gen_pipeline.stages.preprocess import run_preprocess

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module", params=[("L", 8), ("RGB", 10)], ids=["grey8", "rgb10"])
def png_folder(request, tmp_path_factory):
    from PIL import Image

    mode, side = request.param
    root = tmp_path_factory.mktemp("png")
    rng = np.random.default_rng(0)
    images = {}
    for cls in ("boot", "coat"):
        (root / cls).mkdir()
        for i in range(30):
            im = rng.integers(0, 256, (side, side) + ((3,) if mode == "RGB" else ()), dtype=np.uint8)
            Image.fromarray(im, mode).save(root / cls / f"{i:02d}.png")
            images[f"{cls}/{i:02d}.png"] = im
    Image.fromarray(np.zeros((16, 16), np.uint8), "L").save(root / "coat" / "big.png")
    (root / "boot" / "empty.png").write_bytes(b"")
    (root / "boot" / "cut.png").write_bytes((root / "boot" / "00.png").read_bytes()[:40])
    return root, images, side, 3 if mode == "RGB" else 1


def test_png_folder_rows_reconcile_and_bad_images_are_quarantined(spark, png_folder, tmp_path):
    root, images, side, channels = png_folder
    over = ["data.dataset=image_folder", f"data.path={root}"] + (["data.image_size=8"] if channels == 1 else [])
    cfg = load_config("configs/digits_dcgan_tiny.yaml", over)  # RGB: the side and channels from the images
    out = tmp_path / "pre"
    manifest = run_preprocess(spark, cfg, tmp_path / "datasets", out)
    assert manifest["rows_in"] == 63
    assert manifest["rows_written"] == 60 and manifest["rows_quarantined"] == 3
    assert manifest["rows_in"] == manifest["rows_written"] + manifest["rows_quarantined"]
    q = pq.read_table(out / "quarantine").to_pandas().set_index("source")
    assert q.loc["coat/big.png", "reason"] == f"wrong size: 16x16, expected {side}x{side}"
    assert q.loc["boot/empty.png", "reason"].startswith("unreadable image: cannot identify image file")
    assert q.loc["boot/cut.png", "reason"].startswith("unreadable image:")
    assert manifest["quarantine_reasons"] == {"wrong size": 1, "unreadable image": 2}
    spec = json.loads((out / "transform_spec.json").read_text())
    assert spec["shape"] == [channels, side, side] and spec["classes"] == ["boot", "coat"]
    assert spec["pixel_scale"]["max"] == 255
    # every good image is in exactly one split, pixel-exact after the inverse scaling
    tr = ImageTransformer(spec)
    got = []
    for split in ("train", "validation", "test"):
        x, y = PreprocessOutput(out).read_encoded(split)
        if len(x):
            assert x.shape[1] == channels * side * side + 2 and (y == tr.labels(x)).all()
            got += [im.tobytes() for im in tr.pixels(x)]
    assert sorted(got) == sorted(im.tobytes() for im in images.values())


def test_npz_with_corrupt_images_and_a_train_filter(spark, tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (200, 8, 8)).astype(np.float32)
    x[7, 0, 0] = np.inf
    x[8, 1, 1] = -3
    y = np.arange(200) % 4
    np.savez(tmp_path / "set.npz", x=x, y=y)
    cfg = load_config("configs/digits_dcgan_tiny.yaml", ["data.dataset=image_npz", f"data.path={tmp_path / 'set.npz'}",
                                                         "data.image_size=8", "data.train_where=label = 1"])
    manifest = run_preprocess(spark, cfg, tmp_path / "datasets", tmp_path / "pre")
    assert manifest["rows_quarantined"] == 2 and manifest["rows_excluded"] > 0
    assert manifest["rows_in"] == manifest["rows_written"] + manifest["rows_quarantined"] + manifest["rows_excluded"]
    assert set(manifest["label_counts"]["train"]) == {"1"}
    q = pq.read_table(tmp_path / "pre" / "quarantine").to_pandas().sort_values("index")
    assert q["index"].tolist() == [7, 8]
    assert q["reason"].iloc[0] == "corrupt: non-finite pixel values"
    assert q["reason"].iloc[1].startswith("corrupt: pixel values outside the integers 0..255 (min -3, max ")


def test_train_fraction_keeps_a_seeded_share_of_train_only(spark, tmp_path):
    x = np.random.default_rng(2).integers(0, 256, (1000, 8, 8)).astype(np.uint8)
    np.savez(tmp_path / "set.npz", x=x, y=np.arange(1000) % 5)
    over = ["data.dataset=image_npz", f"data.path={tmp_path / 'set.npz'}", "data.image_size=8"]
    full = run_preprocess(spark, load_config("configs/digits_dcgan_tiny.yaml", over), None, tmp_path / "full")
    part = run_preprocess(spark, load_config("configs/digits_dcgan_tiny.yaml", over + ["data.train_fraction=0.25"]),
                          None, tmp_path / "part")
    assert part["train_fraction"] == 0.25 and full["train_fraction"] == 1.0
    assert part["splits"]["validation"] == full["splits"]["validation"]  # untouched
    assert part["splits"]["test"] == full["splits"]["test"]
    assert abs(part["splits"]["train"] - 0.25 * full["splits"]["train"]) < 0.06 * full["splits"]["train"]
    assert part["rows_left_out_by_train_fraction"] == full["splits"]["train"] - part["splits"]["train"]
    assert part["rows_in"] == part["rows_written"] + part["rows_quarantined"] + part["rows_left_out_by_train_fraction"]
    kept = {r.tobytes() for r in PreprocessOutput(tmp_path / "part").read_encoded("train")[0]}
    assert kept <= {r.tobytes() for r in PreprocessOutput(tmp_path / "full").read_encoded("train")[0]}  # a subset


def test_a_non_square_rgb_set_goes_through_preprocess_and_training_at_its_own_size(spark, tmp_path):
    """240 RGB crops 10 high and 14 wide (neither side a multiple of 4), cut from scikit-learn's
    two sample photos (a class each), as a PNG folder with nothing configured about their size:
    Spark preprocess keeps each one pixel-exact, a conditional DCGAN takes 20 steps on them
    (towers at 12 x 16), and the per-epoch grid, FID on the pipeline's classifier, the generated
    rows and the preview are all at 10 x 14 x 3."""
    import torch
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from gen_pipeline.kinds.image.metrics import ensure_classifier
    from gen_pipeline.kinds.image.pictures import epoch_pictures, preview_grid
    from gen_pipeline.models import build_model
    from gen_pipeline.training.loaders import memory_source
    from gen_pipeline.training.loop import fit

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    root, images = tmp_path / "crops", {}
    for cls, photo in zip(("china", "flower"), load_sample_images().images):  # (427, 640, 3) each
        (root / cls).mkdir(parents=True)
        for i in range(120):
            r, c = rng.integers(0, photo.shape[0] - 10), rng.integers(0, photo.shape[1] - 14)
            im = np.ascontiguousarray(photo[r:r + 10, c:c + 14])
            Image.fromarray(im, "RGB").save(root / cls / f"{i:03d}.png")
            images[f"{cls}/{i:03d}.png"] = im
    cfg = load_config("configs/digits_dcgan_tiny.yaml", ["data.dataset=image_folder", f"data.path={root}"])
    out = tmp_path / "pre"
    manifest = run_preprocess(spark, cfg, tmp_path / "datasets", out)
    assert manifest["rows_written"] == 240 and manifest["image_shape"] == [3, 10, 14]
    data = PreprocessOutput(out)
    tr = ImageTransformer(json.loads((out / "transform_spec.json").read_text()))
    got = [im.tobytes() for s in ("train", "validation", "test") for im in tr.pixels(data.read_encoded(s)[0])]
    assert sorted(got) == sorted(im.tobytes() for im in images.values())

    torch.manual_seed(0)
    model = build_model(cfg.model, tr.spans, tr.output_dim)
    model.configure_optimizers(cfg.train.lr, 0.0)
    x, _ = data.read_encoded("train")
    fit(model, memory_source(torch.from_numpy(x), 0, 1, 64, seed=0), epochs=1, steps_per_epoch=20, batch_rows=64,
        device=torch.device("cpu"), log=None)
    _, info = ensure_classifier(data, epochs=30, log=lambda m: None)
    assert info["test_accuracy"] > 0.8  # the classifier tells the two photos' crops apart at 10 x 14
    (grid,), metrics = epoch_pictures(model, tr, data, 1, tmp_path)
    with Image.open(grid) as im:  # one row of 10 per class, tiles 14 wide and 10 high
        assert im.mode == "RGB" and im.size == (2 * (10 * 16 + 2), 2 * (2 * 12 + 2))
    assert np.isfinite(metrics["fid_2k"]) and metrics["fid_2k"] > 0

    gen = tmp_path / "generated"
    gen.mkdir()
    labels = torch.arange(40) % 2
    table = tr.inverse_to_arrow(model.sample(40, torch.Generator().manual_seed(7),
                                             fixed={tr.label_start: labels}).numpy())
    assert {len(b) for b in table.column("image").to_pylist()} == {10 * 14 * 3}
    assert table.column("label").to_pylist() == labels.tolist()
    pq.write_table(table, gen / "part-00000.parquet")
    with Image.open(preview_grid(gen, tr)) as im:
        assert im.size == (2 * (10 * 16 + 2), 2 * (2 * 12 + 2))

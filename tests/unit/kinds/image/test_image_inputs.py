"""The user's images as they come, without engines: RGB and grey PNG folders and .npz arrays,
square or not, sizes taken from the data, sides that are not a multiple of 4 padded inside the
conv towers and cropped back, so models read and write images of the data's own H x W and
channel count."""

import numpy as np
import pytest
import torch

from gen_pipeline.config import ModelConfig
from gen_pipeline.errors import PipelineError
from gen_pipeline.kinds.image.metrics import Classifier, predict, train_classifier
from gen_pipeline.kinds.image.pictures import grid_png
from gen_pipeline.kinds.image.sources import decode_unit, folder_source, npz_source
from gen_pipeline.kinds.image.transform import ImageTransformer
from gen_pipeline.models import build_model
from gen_pipeline.models.conv import DownTower, UpTower, crop_to_side, model_side, pad_to_model_side
from gen_pipeline.training.loaders import memory_source
from gen_pipeline.training.loop import fit


def _rows(source):
    return [r for u in source.units for r in decode_unit(u, source.size, source.classes, source.channels)]


def _spec(channels, side, k=2):
    h, w = side if isinstance(side, tuple) else (side, side)
    return {"version": 1, "kind": "image", "shape": [channels, h, w], "classes": [str(i) for i in range(k)]}


# ---- readers ------------------------------------------------------------------------------------
def test_rgb_png_folder_is_read_in_colour_at_its_own_side_and_a_grey_image_joins_it(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    want = {}
    for cls in ("red", "blue"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            im = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
            Image.fromarray(im, "RGB").save(tmp_path / cls / f"{i}.png")
            want[f"{cls}/{i}.png"] = im
    grey = rng.integers(0, 256, (10, 10), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "red" / "grey.png")
    want["red/grey.png"] = np.repeat(grey[..., None], 3, -1)  # grey repeated into R, G, B
    Image.fromarray(np.zeros((12, 12, 3), np.uint8), "RGB").save(tmp_path / "blue" / "big.png")
    src = folder_source(tmp_path, None)
    assert (src.size, src.channels, src.classes) == (10, 3, ("blue", "red"))  # the most common side
    rows = {r[0]: r for r in _rows(src)}
    assert rows["blue/big.png"][5] == "wrong size: 12x12, expected 10x10"
    for name, im in want.items():
        assert rows[name][4] == im.tobytes() and rows[name][5] is None
    # a model's channel count wins at score time: colour to grey as PIL's "L" does it
    grey_src = folder_source(tmp_path, 10, 1)
    got = {r[0]: r[4] for r in _rows(grey_src)}
    assert got["red/0.png"] == np.asarray(Image.fromarray(want["red/0.png"]).convert("L")).tobytes()


def test_png_folder_of_grey_pixels_stored_as_rgb_is_grey_and_a_non_square_one_is_read_at_its_own_size(tmp_path):
    from PIL import Image

    im = np.random.default_rng(1).integers(0, 256, (6, 6), dtype=np.uint8)
    (tmp_path / "a").mkdir()
    Image.fromarray(np.stack([im] * 3, -1), "RGB").save(tmp_path / "a" / "x.png")
    src = folder_source(tmp_path, None)
    assert (src.size, src.channels) == (6, 1) and _rows(src)[0][4] == im.tobytes()
    wide = tmp_path / "wide"
    (wide / "a").mkdir(parents=True)
    ims = np.random.default_rng(2).integers(0, 256, (2, 8, 12), dtype=np.uint8)  # H 8, W 12
    for i, w in enumerate(ims):
        Image.fromarray(w, "L").save(wide / "a" / f"w{i}.png")
    Image.fromarray(np.zeros((12, 8), np.uint8), "L").save(wide / "a" / "tall.png")  # 8 wide, 12 high
    src = folder_source(wide, None)
    assert (src.size, src.channels) == ((8, 12), 1)  # (H, W), the most common size
    rows = {r[0]: r for r in _rows(src)}
    assert [rows[f"a/w{i}.png"][4] for i in range(2)] == [w.tobytes() for w in ims]
    assert rows["a/tall.png"][5] == "wrong size: 8x12, expected 12x8"  # width x height


def test_sets_too_small_unreadable_or_flat_non_square_are_refused_in_one_line(tmp_path):
    from PIL import Image

    for name in ("tiny", "junk"):
        (tmp_path / name / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((2, 2), np.uint8), "L").save(tmp_path / "tiny" / "a" / "t.png")
    with pytest.raises(PipelineError, match="tiny: the images are 2x2; the image models need a side of at least 4"):
        folder_source(tmp_path / "tiny", None)
    (tmp_path / "junk" / "a" / "j.png").write_text("not a png")
    with pytest.raises(PipelineError, match="junk: none of its 1 .png files can be read as an image"):
        folder_source(tmp_path / "junk", None)
    np.savez(tmp_path / "flat.npz", x=np.zeros((2, 50), np.uint8))
    with pytest.raises(PipelineError, match="flat.npz: x holds rows of 50 pixels, not a square image"):
        npz_source(tmp_path / "flat.npz", None)


def test_rgb_npz_channels_last_or_first_and_odd_sides(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (5, 30, 30, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1])
    np.savez(tmp_path / "last.npz", x=x, y=y)
    np.savez(tmp_path / "first.npz", x=np.moveaxis(x, -1, 1), y=y)
    for name in ("last.npz", "first.npz"):
        src = npz_source(tmp_path / name, None)
        assert (src.size, src.channels, src.classes) == (30, 3, ("0", "1", "2"))
        rows = _rows(src)
        assert [r[4] for r in rows] == [im.tobytes() for im in x] and [r[3] for r in rows] == y.tolist()
    grey = [r[4] for r in _rows(npz_source(tmp_path / "last.npz", 30, 1))]  # a grey model scores it
    assert grey == [np.asarray(Image.fromarray(im).convert("L")).tobytes() for im in x]
    assert {r[5] for r in _rows(npz_source(tmp_path / "last.npz", 28))} == {"wrong size: 30x30, expected 28x28"}
    np.savez(tmp_path / "g.npz", x=rng.integers(0, 256, (2, 10, 10, 1), dtype=np.uint8))
    assert (npz_source(tmp_path / "g.npz", None).channels, npz_source(tmp_path / "g.npz", None).size) == (1, 10)
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 5, 5, 5), np.uint8))
    with pytest.raises(PipelineError, match=r"bad.npz: x has shape \(2, 5, 5, 5\)"):
        npz_source(tmp_path / "bad.npz", None)
    wide = rng.integers(0, 256, (2, 10, 12, 3), dtype=np.uint8)  # H 10, W 12
    np.savez(tmp_path / "wide.npz", x=wide)
    src = npz_source(tmp_path / "wide.npz", None)
    assert (src.size, src.channels) == ((10, 12), 3) and [r[4] for r in _rows(src)] == [im.tobytes() for im in wide]
    assert {r[5] for r in _rows(npz_source(tmp_path / "wide.npz", 10))} == {"wrong size: 12x10, expected 10x10"}
    np.savez(tmp_path / "thin.npz", x=np.zeros((2, 10, 3), np.uint8))
    with pytest.raises(PipelineError, match="thin.npz: the images are 3x10; the image models need a side of at least"):
        npz_source(tmp_path / "thin.npz", None)


# ---- the encoding: channels last outside, channel planes inside, exactly invertible ------------
def test_rgb_encoding_puts_channel_planes_in_the_features_and_inverts_to_the_same_bytes():
    tr = ImageTransformer(_spec(3, 10))
    assert tr.image_dim == 300 and tr.output_dim == 302 and tr.image_shape == (10, 10, 3)
    assert tr.spans[0].shape == (3, 10, 10)
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, (7, 10, 10, 3), dtype=np.uint8)
    x = tr.encode(imgs.reshape(7, -1), [0, 1, 0, 1, None, 1, 0])
    assert np.allclose(x[:, :100], imgs[..., 0].reshape(7, -1) / 255.0)  # the R plane first
    assert np.allclose(x[:, 200:300], imgs[..., 2].reshape(7, -1) / 255.0)
    assert (tr.pixels(x) == imgs).all()
    table = tr.inverse_to_arrow(x)
    assert table.column("image").to_pylist() == [im.tobytes() for im in imgs]
    assert table.column("label").to_pylist() == [0, 1, 0, 1, None, 1, 0]
    again, reasons = tr.transform(table.to_pandas())
    assert np.allclose(again, x) and reasons == [None] * 7


# ---- the networks take the channels and the side from the data ----------------------------------
@pytest.mark.parametrize("side", [9, 10, 30, (6, 10), (9, 14), (12, 7)])
def test_padding_to_a_multiple_of_4_is_cropped_back_exactly(side):
    h, w = side if isinstance(side, tuple) else (side, side)
    x = torch.rand(2, 3, h, w)
    padded = pad_to_model_side(x)
    assert padded.shape[-2:] == (model_side(h), model_side(w))
    assert all(m % 4 == 0 and 0 <= m - s < 4 for m, s in ((model_side(h), h), (model_side(w), w)))
    assert torch.equal(crop_to_side(padded, side), x)
    if h != w:  # each side padded on its own, with the image's edge pixels
        top, left = (model_side(h) - h) // 2, (model_side(w) - w) // 2
        assert torch.equal(padded[..., :top + 1, left:left + w], x[..., :1, :].expand(-1, -1, top + 1, -1))


@pytest.mark.parametrize("side,quarter", [((12, 20), (3, 5)), ((6, 10), (2, 3)), (28, (7, 7))])
def test_towers_produce_and_consume_non_square_images(side, quarter):
    """The generator/decoder projects to (2c, H'/4, W'/4) and crops to H x W; the discriminator/
    encoder pads H x W to H' x W' and flattens 2c * H'/4 * W'/4 features (H', W': the sides
    rounded up to multiples of 4: 6 x 10 -> 8 x 12)."""
    h, w = side if isinstance(side, tuple) else (side, side)
    torch.manual_seed(0)
    up = UpTower(8, side, 4, batch_norm=True, channels=3)
    assert up.project[0].out_features == 2 * 4 * quarter[0] * quarter[1]
    out = up(torch.randn(5, 8))
    assert out.shape == (5, 3, h, w)
    down = DownTower(3 + 2, side, 4)
    assert down.out_dim == 2 * 4 * quarter[0] * quarter[1]
    assert down(torch.cat([out, torch.zeros(5, 2, h, w)], 1)).shape == (5, down.out_dim)
    if h == w:  # a square size given as (S, S) builds the very layers an int S builds
        square = {k: v.shape for k, v in UpTower(8, (h, w), 4, True, channels=3).state_dict().items()}
        assert square == {k: v.shape for k, v in up.state_dict().items()}


@pytest.mark.parametrize("family", ["dcgan", "conv_vae"])
@pytest.mark.parametrize("channels,side", [(3, 10), (3, 30), (1, 9), (3, (12, 20)), (1, (6, 10))])
def test_networks_read_and_write_the_datas_channels_and_side(family, channels, side):
    tr = ImageTransformer(_spec(channels, side, k=3))
    torch.manual_seed(0)
    model = build_model(ModelConfig(family=family, conditional=True, latent_dim=8, base_channels=8),
                        tr.spans, tr.output_dim)
    model.configure_optimizers(1e-3, 0.0)
    batch = torch.from_numpy(tr.encode(np.random.default_rng(0).integers(0, 256, (16, tr.image_dim), np.uint8),
                                       np.arange(16) % 3))
    metrics = model.train_step(batch)
    assert all(torch.isfinite(v) for v in metrics.values())
    s = model.sample(5, torch.Generator().manual_seed(0), fixed={tr.label_start: torch.tensor([0, 1, 2, 0, 1])})
    assert s.shape == (5, tr.image_dim + 3) and s[:, tr.image_dim:].argmax(1).tolist() == [0, 1, 2, 0, 1]
    assert tr.pixels(s.numpy()).shape == (5,) + tr.image_shape
    if family == "conv_vae":  # score reads the data's own size too
        assert all(torch.isfinite(v).all() and v.shape == (16,) for v in model.score_columns(batch).values())


@pytest.mark.parametrize("side", [10, (6, 14)])
def test_classifier_and_grids_take_rgb_at_an_odd_or_non_square_size(tmp_path, side):
    from PIL import Image

    tr = ImageTransformer(_spec(3, side))
    h, w = tr.height, tr.width
    rng = np.random.default_rng(4)
    y = np.arange(200) % 2
    imgs = rng.integers(0, 60, (200, h, w, 3), dtype=np.uint8)
    imgs[y == 0, :, :, 0] += 150  # class 0 reddish, class 1 bluish
    imgs[y == 1, :, :, 2] += 150
    x = tr.encode(imgs.reshape(200, -1), y)
    torch.manual_seed(0)
    clf = train_classifier(x, y, side, 2, epochs=2, channels=3)
    feats, pred = predict(clf, x)
    assert feats.shape == (200, 128) and (pred == y).mean() > 0.9
    assert Classifier(10, 2).body[0].in_channels == 1  # grey stays one channel (cached classifiers load)
    png = grid_png(tr.pixels(x[:20]), tmp_path / "g.png", ncols=5)
    with Image.open(png) as im:
        assert im.mode == "RGB" and im.size == (2 * (5 * (w + 2) + 2), 2 * (4 * (h + 2) + 2))


def test_conditional_dcgan_learns_the_colour_of_each_class_of_a_tiny_rgb_set_at_an_odd_side():
    """Two classes of 10x10 RGB images, reddish and bluish (red minus blue +180 and -180 on
    average): after 80 steps the images asked for each class have that class's colour (an
    untrained generator's are alike for both classes)."""
    tr = ImageTransformer(_spec(3, 10))
    rng = np.random.default_rng(5)
    y = np.arange(512) % 2
    imgs = rng.integers(0, 60, (512, 10, 10, 3), dtype=np.uint8)
    imgs[y == 0, :, :, 0] += 180
    imgs[y == 1, :, :, 2] += 180
    data = torch.from_numpy(tr.encode(imgs.reshape(512, -1), y))
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build_model(ModelConfig(family="dcgan", conditional=True, latent_dim=8, base_channels=8),
                        tr.spans, tr.output_dim)
    model.configure_optimizers(2e-3, 0.0)
    fit(model, memory_source(data, 0, 1, 64, seed=0), epochs=10, steps_per_epoch=8, batch_rows=64,
        device=torch.device("cpu"), log=None)
    labels = torch.arange(200) % 2
    img = tr.pixels(model.sample(200, torch.Generator().manual_seed(1), fixed={tr.label_start: labels}).numpy())
    red_minus_blue = img[..., 0].mean((1, 2)).astype(float) - img[..., 2].mean((1, 2))
    lab = labels.numpy()
    assert (red_minus_blue[lab == 0] > 0).mean() > 0.9 and (red_minus_blue[lab == 1] < 0).mean() > 0.9
    assert red_minus_blue[lab == 0].mean() > 90 and red_minus_blue[lab == 1].mean() < -90

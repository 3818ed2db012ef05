"""Image sets without engines: the readers' quarantine reasons, the encoding round trip, and the
DCGAN / conv VAE learning scikit-learn's 8x8 digits (FID falls, conditions are obeyed, the VAE's
negative ELBO ranks unseen digits as anomalies)."""

import gzip
import io
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from gen_pipeline.config import ModelConfig
from gen_pipeline.kinds.image.datasets import fetch_digits
from gen_pipeline.errors import PipelineError
from gen_pipeline.kinds.image.metrics import accuracy, fid, frechet_distance, predict, train_classifier
from gen_pipeline.kinds.image.pictures import grid_png
from gen_pipeline.kinds.image.sources import decode_unit, folder_source, idx_source, npz_source
from gen_pipeline.kinds.image.transform import ImageTransformer
from gen_pipeline.training.loaders import memory_source
from gen_pipeline.models import build_model
from gen_pipeline.models.conv_vae import cb_log_norm
from gen_pipeline.training.loop import fit

SPEC = {"version": 1, "kind": "image", "shape": [1, 8, 8], "classes": [str(i) for i in range(10)]}


def _idx(path: Path, data: bytes, dims: tuple[int, ...], truncate: int = 0) -> Path:
    raw = struct.pack(">I", 0x0800 + len(dims)) + struct.pack(f">{len(dims)}I", *dims) + data
    blob = gzip.compress(raw)
    path.write_bytes(blob[:len(blob) - truncate] if truncate else blob)
    return path


def _rows(source, size):
    return [r for u in source.units for r in decode_unit(u, size, source.classes)]


@pytest.fixture(scope="module")
def digits():
    """(encoded features (N, 74), labels (N,)) of the 1,797 digits through the real reader."""
    import os

    source = npz_source(fetch_digits(Path(os.environ["GEN_PIPELINE_DATA_DIR"])), 8)
    rows = _rows(source, 8)
    assert all(r[5] is None for r in rows) and len(rows) == 1797
    pix = np.frombuffer(b"".join(r[4] for r in rows), np.uint8).reshape(len(rows), -1)
    y = np.array([r[3] for r in rows])
    return ImageTransformer(SPEC).encode(pix, y), y


@pytest.fixture(scope="module")
def classifier(digits):
    x, y = digits
    torch.set_num_threads(1)
    clf = train_classifier(x[:1400], y[:1400], 8, 10, epochs=15)
    assert accuracy(clf, x[1400:], y[1400:]) > 0.85  # the yardstick itself must be good
    return clf


# ---- readers: every bad image gets its reason, good ones their bytes ----------------------------
def test_idx_reader_keeps_good_images_and_quarantines_truncated_unlabelled_and_wrong_size(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 8, 8), dtype=np.uint8)
    good = _idx(tmp_path / "a-images.gz", imgs.tobytes(), (5, 8, 8))
    labels = _idx(tmp_path / "a-labels.gz", bytes([1, 2, 3, 4]), (4,))  # one label short
    cut = _idx(tmp_path / "b-images.gz", imgs.tobytes()[:-40], (5, 8, 8))  # the last image is short
    labels5 = _idx(tmp_path / "b-labels.gz", bytes([1, 2, 3, 4, 5]), (5,))
    big = _idx(tmp_path / "c-images.gz", bytes(2 * 12 * 12), (2, 12, 12))
    src = idx_source("t", [(good, labels, "train"), (cut, labels5, "test"), (big, labels5, "")], 8, SPEC["classes"])
    rows = _rows(src, 8)
    assert len(rows) == 12
    ok = [r for r in rows if r[5] is None]
    assert [r[4] for r in ok[:4]] == [im.tobytes() for im in imgs[:4]]
    assert [r[3] for r in ok[:4]] == [1, 2, 3, 4]
    reasons = [r[5] for r in rows if r[5]]
    assert reasons[0] == "no label: a-labels.gz has 4 records"
    assert reasons[1] == "corrupt: file ends after 24 of 64 bytes of this image (truncated)"
    assert reasons[2:] == ["wrong size: 12x12, expected 8x8"] * 2
    assert [r[2] for r in rows[5:10]] == ["test"] * 5


def test_idx_reader_quarantines_the_images_after_a_broken_gzip_stream(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (3000, 8, 8), dtype=np.uint8)
    broken = _idx(tmp_path / "i.gz", imgs.tobytes(), (3000, 8, 8), truncate=3000)  # the stream stops early
    labels = _idx(tmp_path / "l.gz", bytes(3000), (3000,))
    rows = _rows(idx_source("t", [(broken, labels, "")], 8, SPEC["classes"]), 8)
    good = [r for r in rows if r[5] is None]
    assert 0 < len(good) < 3000 and [r[4] for r in good] == [im.tobytes() for im in imgs[:len(good)]]
    assert {r[5].split(" (")[0] for r in rows if r[5]} == {"unreadable: i.gz is corrupt from here on"}


def test_idx_reader_refuses_a_file_that_is_not_idx_with_one_line(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(gzip.compress(b"hello world, not an idx file"))
    with pytest.raises(PipelineError, match=r"x.gz: not an idx file of uint8 with 3 dimension"):
        idx_source("t", [(bad, bad, "")], 8, ("a", "b"))


def test_png_folder_reader_reasons_for_wrong_size_unreadable_and_corrupt(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
    im = np.arange(64, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(im, "L").save(tmp_path / "cat" / "good.png")
    Image.fromarray(np.stack([im] * 3, -1), "RGB").save(tmp_path / "dog" / "rgb.png")  # converted to gray
    Image.fromarray(np.zeros((9, 8), np.uint8), "L").save(tmp_path / "dog" / "big.png")
    (tmp_path / "dog" / "text.png").write_text("not a png at all")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8), "L").save(buf, "PNG")
    (tmp_path / "cat" / "cut.png").write_bytes(buf.getvalue()[:60])
    src = folder_source(tmp_path, 8)
    assert src.classes == ("cat", "dog")
    rows = {Path(r[0]).name: r for r in _rows(src, 8)}
    assert rows["good.png"][4] == im.tobytes() and rows["good.png"][3] == 0 and rows["good.png"][5] is None
    assert rows["rgb.png"][4] == im.tobytes() and rows["rgb.png"][3] == 1
    assert rows["big.png"][5] == "wrong size: 8x9, expected 8x8"
    assert rows["text.png"][5].startswith("unreadable image: cannot identify image file")
    assert rows["cut.png"][5].startswith("unreadable image:")  # truncated mid-stream


def test_npz_reader_quarantines_corrupt_pixels_and_bad_labels(tmp_path):
    x = np.zeros((4, 8, 8), np.float64)
    x[1, 0, 0] = np.nan
    x[2, 0, 0] = 300
    y = np.array([0, 1, 2, 7])
    np.savez(tmp_path / "a.npz", x=x, y=y, classes=np.array(["a", "b", "c"]))
    rows = _rows(npz_source(tmp_path / "a.npz", 8), 8)
    assert [r[5] for r in rows] == [None, "corrupt: non-finite pixel values",
                                    "corrupt: pixel values outside the integers 0..255 (min 0, max 300)",
                                    "label 7 out of range (0..2)"]
    np.savez(tmp_path / "b.npz", x=np.zeros((2, 6, 6), np.uint8))
    assert {r[5] for r in _rows(npz_source(tmp_path / "b.npz", 8), 8)} == {"wrong size: 6x6, expected 8x8"}
    (tmp_path / "c.npz").write_bytes(b"garbage")
    with pytest.raises(PipelineError, match="c.npz: not a readable .npz"):
        npz_source(tmp_path / "c.npz", 8)


# ---- the encoding is exactly invertible -------------------------------------------------------
def test_encode_then_decode_gives_back_the_same_pixels_and_labels():
    tr = ImageTransformer(SPEC)
    rng = np.random.default_rng(1)
    pix = rng.integers(0, 256, (50, 64), dtype=np.uint8)
    labels = list(rng.integers(0, 10, 50))
    labels[3] = None
    x = tr.encode(pix, labels)
    assert x.shape == (50, 74) and x[:, :64].max() <= 1.0 and x[3, 64:].sum() == 0
    table = tr.inverse_to_arrow(x)
    back = np.frombuffer(b"".join(table.column("image").to_pylist()), np.uint8).reshape(50, 64)
    assert (back == pix).all()
    assert table.column("label").to_pylist() == [None if v is None else int(v) for v in labels]
    df = table.to_pandas()
    df.loc[5, "image"] = b"\x00" * 10  # wrong size at score time: a reason, not a crash
    again, reasons = tr.transform(df, strict=False)
    assert reasons[5] == "image: 10 bytes, expected 64 (8x8)" and sum(r is not None for r in reasons) == 1
    assert np.allclose(again[np.arange(50) != 5], x[np.arange(50) != 5])


def test_frechet_distance_is_zero_for_the_same_set_and_the_squared_shift_for_a_moved_one():
    a = np.random.default_rng(0).normal(size=(4000, 4))
    assert abs(frechet_distance(a, a)) < 1e-6
    assert frechet_distance(a, a + 3.0) == pytest.approx(4 * 9.0, rel=1e-3)


def test_continuous_bernoulli_normaliser_matches_numerical_integration():
    logits = torch.tensor([-3.0, -0.5, -0.01, 0.0, 0.02, 1.0, 4.0], dtype=torch.float64)
    lam = torch.sigmoid(logits)
    u = torch.linspace(0, 1, 200_001, dtype=torch.float64)[:, None]
    integral = torch.trapezoid(lam ** u * (1 - lam) ** (1 - u), u, dim=0)  # 1 / C(lambda)
    assert torch.allclose(cb_log_norm(logits), -torch.log(integral), atol=1e-4)


# ---- the models learn the digits ----------------------------------------------------------------
def _train(family, x, epochs, lr, **kw):
    torch.manual_seed(0)
    tr = ImageTransformer(SPEC)
    model = build_model(ModelConfig(family=family, **kw), tr.spans, tr.output_dim)
    model.configure_optimizers(lr, 0.0)
    data = torch.from_numpy(x)
    state = fit(model, memory_source(data, 0, 1, 64, seed=3), epochs=epochs, steps_per_epoch=len(data) // 64,
                batch_rows=64, device=torch.device("cpu"), log=None)
    return model, state


def test_conditional_dcgan_fid_falls_and_samples_are_the_requested_digit(digits, classifier):
    x, _ = digits
    tr = ImageTransformer(SPEC)
    torch.manual_seed(0)
    untrained = build_model(ModelConfig(family="dcgan", conditional=True, latent_dim=16, base_channels=16),
                            tr.spans, tr.output_dim)
    before = fid(classifier, x, untrained.sample(1000, torch.Generator().manual_seed(1)).numpy())
    model, state = _train("dcgan", x, 12, 5e-4, conditional=True, latent_dim=16, base_channels=16)
    labels = torch.arange(1000) % 10
    s = model.sample(1000, torch.Generator().manual_seed(1), fixed={64: labels})  # the label span starts at 64
    assert torch.equal(s, model.sample(1000, torch.Generator().manual_seed(1), fixed={64: labels}))  # seeded
    after = fid(classifier, x, s.numpy())
    assert after < before / 4, (before, after)
    assert (predict(classifier, s.numpy())[1] == labels.numpy()).mean() > 0.4  # chance: 0.1
    assert s[:, 64:].argmax(1).tolist() == labels.tolist()  # the condition travels with the image
    assert 0.0 < state.history[-1]["d_real"] < 1.0


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous_bernoulli"])
def test_conv_vae_trained_on_zeros_scores_other_digits_as_anomalies(digits, likelihood):
    from sklearn.metrics import roc_auc_score

    x, y = digits
    model, state = _train("conv_vae", x[y == 0], 40, 3e-3, conditional=False, latent_dim=4, base_channels=8,
                          likelihood=likelihood)
    assert state.history[-1]["loss"] < state.history[0]["loss"] - 5  # nats per image
    scores = model.score(torch.from_numpy(x)).numpy()
    assert np.isfinite(scores).all()
    assert roc_auc_score(y != 0, scores) > 0.9
    neg = model.neg_elbo(torch.from_numpy(x)).numpy()
    assert np.allclose(scores, neg - model.nll_floor(torch.from_numpy(x)).numpy(), atol=1e-3)
    elbo = model.elbo(torch.from_numpy(x[y == 0]), generator=torch.Generator().manual_seed(0))
    assert -elbo.mean().item() == pytest.approx(neg[y == 0].mean(), rel=0.1)  # MC ELBO vs the mean decode


def test_bernoulli_floor_is_the_pixels_own_entropy():
    """A grey pixel costs at least log 2 nats under a Bernoulli likelihood, a black or white one
    nothing: the anomaly score takes that floor off, so an image is not anomalous for being grey."""
    tr = ImageTransformer(SPEC)
    x = np.zeros((3, tr.output_dim), np.float32)
    x[1, :64] = 1.0
    x[2, :64] = 0.5
    x = torch.from_numpy(x)

    def vae(likelihood):
        return build_model(ModelConfig(family="conv_vae", conditional=False, latent_dim=4, base_channels=8,
                                       likelihood=likelihood), tr.spans, tr.output_dim)

    assert vae("continuous_bernoulli").nll_floor(x).numpy() == pytest.approx([0.0] * 3)  # a normalised density
    model = vae("bernoulli")
    floor = model.nll_floor(x)
    assert floor.numpy() == pytest.approx([0.0, 0.0, 64 * np.log(2)], abs=1e-4)
    img = x[:, :64]
    for logits in (torch.zeros_like(img), torch.randn(img.shape, generator=torch.Generator().manual_seed(0))):
        assert (model.nll(img, logits) >= floor - 1e-4).all()  # no decoder beats the floor...
    perfect = torch.logit(img.clamp(1e-6, 1 - 1e-6))
    assert model.nll(img, perfect).numpy() == pytest.approx(floor.numpy(), abs=1e-2)  # ...the perfect one reaches it


def test_unconditional_models_leave_the_label_empty_and_grids_render(tmp_path):
    from PIL import Image

    tr = ImageTransformer(SPEC)
    model = build_model(ModelConfig(family="conv_vae", conditional=False, latent_dim=4, base_channels=8),
                        tr.spans, tr.output_dim)
    table = tr.inverse_to_arrow(model.sample(20, torch.Generator().manual_seed(0)).numpy())
    assert table.column("label").null_count == 20
    png = grid_png(tr.pixels(model.sample(25).numpy()), tmp_path / "g.png", ncols=5)
    with Image.open(png) as im:
        assert im.size == (2 * (5 * 10 + 2), 2 * (5 * 10 + 2))


def test_image_models_refuse_a_table_and_an_image_span_whose_size_they_cannot_tell():
    from gen_pipeline.spans import Span

    with pytest.raises(PipelineError, match="need an image dataset"):
        build_model(ModelConfig(family="dcgan"), [Span("continuous", 0, 1)], 1)
    with pytest.raises(PipelineError, match="no \\(C, H, W\\) shape: the conv models cannot tell their height"):
        build_model(ModelConfig(family="conv_vae"), [Span("image", 0, 50)], 50)  # not S*S, no shape
    with pytest.raises(PipelineError, match="does not hold its shape \\(1, 5, 5\\)"):
        build_model(ModelConfig(family="dcgan"), [Span("image", 0, 50, shape=(1, 5, 5))], 50)
    model = build_model(ModelConfig(family="dcgan"), [Span("image", 0, 50, shape=(1, 5, 10))], 50)
    assert model.side == (5, 10)  # a non-square shape is taken as it is

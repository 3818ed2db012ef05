"""The DCGAN's small-data remedies and the image training plumbing, without engines:
DiffAugment, the generator's moving average, spectral normalisation, resize-convolution,
steps-sized epochs and the one-row-per-class preview."""

import numpy as np
import pytest
import torch

from gen_pipeline.config import ModelConfig, load_config
from gen_pipeline.kinds.image.transform import ImageTransformer
from gen_pipeline.models import build_model
from gen_pipeline.models.augment import cutout, diff_augment, translation

SPEC = {"version": 1, "kind": "image", "shape": [1, 8, 8], "classes": [str(i) for i in range(10)]}


def _dcgan(**kw):
    tr = ImageTransformer(SPEC)
    torch.manual_seed(0)
    cfg = ModelConfig(family="dcgan", conditional=True, latent_dim=8, base_channels=8, **kw)
    model = build_model(cfg, tr.spans, tr.output_dim)
    model.configure_optimizers(1e-3, 0.0)
    return model


def _batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 74)
    x[:, :64] = torch.rand(n, 64, generator=g)
    x[torch.arange(n), 64 + torch.randint(10, (n,), generator=g)] = 1.0
    return x


def test_diff_augment_keeps_shapes_is_differentiable_and_reproduces_from_a_generator():
    x = torch.rand(6, 1, 8, 8, requires_grad=True)
    out = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    again = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    assert not torch.equal(out, diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(4)))
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # the generator's gradient flows through
    rgb = torch.rand(4, 3, 8, 8)
    assert diff_augment(rgb, "color", torch.Generator().manual_seed(0)).shape == rgb.shape


def test_translation_moves_a_pixel_by_at_most_an_eighth_and_cutout_blanks_half_a_side():
    x = torch.zeros(200, 1, 16, 16)
    x[:, 0, 8, 8] = 1.0
    moved = translation(x, torch.Generator().manual_seed(0))
    pos = moved.reshape(200, -1).argmax(1)
    dy, dx = pos // 16 - 8, pos % 16 - 8
    assert moved.reshape(200, -1).sum(1).eq(1).all()  # shifted, never lost (2 <= 8 from the border)
    assert dy.abs().max() == 2 and dx.abs().max() == 2 and len(set(zip(dy.tolist(), dx.tolist()))) > 15
    blank = cutout(torch.ones(200, 1, 16, 16), torch.Generator().manual_seed(0))
    zeros = (blank == 0).reshape(200, -1).sum(1)
    assert zeros.max() == 64 and zeros.min() >= 16  # an 8x8 square, partly over the border at worst


def test_ema_weights_move_away_from_the_raw_ones_and_are_what_sampling_uses(tmp_path):
    model = _dcgan(ema_decay=0.9)
    assert "generator_ema.tower.project.0.weight" in model.state_dict() and "ema_steps" in model.state_dict()
    for i in range(5):
        model.train_step(_batch(seed=i))
    raw = model.generator.tower.project[0].weight
    ema = model.generator_ema.tower.project[0].weight
    assert not torch.allclose(raw, ema) and not ema.requires_grad
    assert float(model.ema_steps) == 5
    s = model.sample(16, torch.Generator().manual_seed(1), fixed={model.label_start: torch.arange(16) % 10})
    g = torch.Generator().manual_seed(1)
    z = torch.randn(16, 8, generator=g)
    y = torch.nn.functional.one_hot(torch.arange(16) % 10, 10).float()
    model.generator_ema.eval()
    model.generator.eval()
    assert torch.allclose(s[:, :64], model.generator_ema(z, y).reshape(16, -1))
    assert not torch.allclose(s[:, :64], model.generator(z, y).reshape(16, -1))
    # the average travels in the state dict (checkpoints, the registered model)
    other = _dcgan(ema_decay=0.9)
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.sample(16, torch.Generator().manual_seed(1), fixed={other.label_start: torch.arange(16) % 10}), s)


def test_ema_survives_ddp_style_wrapping():
    """``distribute`` wraps the training views only; the raw generator (and its average) keep the
    state dict, and the average follows the wrapped network's updates."""
    model = _dcgan(ema_decay=0.5)
    model.distribute(lambda m: torch.nn.Sequential(m)[0])  # a wrapper that hands back the same module
    before = model.generator_ema.tower.project[0].weight.clone()
    model.train_step(_batch())
    assert not torch.equal(before, model.generator_ema.tower.project[0].weight)
    assert set(model.state_dict()) == set(_dcgan(ema_decay=0.5).state_dict())


def test_spectral_norm_bounds_each_discriminator_layer():
    model = _dcgan(spectral_norm=True)
    for i in range(20):  # one power iteration per training forward
        model.train_step(_batch(seed=i))
    layers = [m for m in model.discriminator.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 3
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().reshape(m.weight.shape[0], -1), ord=2)
        assert 0.9 < sigma < 1.1, sigma
    plain = _dcgan(spectral_norm=False)
    w = plain.discriminator.features.net[0].weight
    assert not hasattr(plain.discriminator.features.net[0], "parametrizations") and w.requires_grad


@pytest.mark.parametrize("upsample", ["resize", "transposed"])
def test_both_upsamplings_give_the_image_shape_and_r1_adds_its_metric(upsample):
    model = _dcgan(upsample=upsample, r1_gamma=1.0, r1_every=2)
    m = model.train_step(_batch())
    assert "r1" in m and float(m["r1"]) >= 0.0
    assert "r1" not in model.train_step(_batch(seed=1))  # lazy: every second step
    assert model.sample(5).shape == (5, 74)
    kinds = {type(m).__name__ for m in model.generator.modules()}
    assert ("Upsample" in kinds) == (upsample == "resize") and ("ConvTranspose2d" in kinds) == (upsample != "resize")


def test_an_unknown_augmentation_is_refused_at_config_load():
    with pytest.raises(Exception, match="diff_augment"):
        ModelConfig(family="dcgan", diff_augment="color,rotate")


def test_min_steps_lengthens_the_epochs_of_a_small_set_only():
    from gen_pipeline.kinds import kind_of
    from gen_pipeline.training.driver import steps_per_epoch as steps_for

    def steps_per_epoch(cfg, rows):  # with the data kind's default min_steps, as the driver does
        return steps_for(cfg, rows, kind_of(cfg).default_min_steps)

    cfg = load_config("configs/fashion_dcgan.yaml")  # 2 workers x 128 rows, 15 epochs
    assert steps_per_epoch(cfg, 200_000) == (781, "")  # a full pass already gives >= min_steps
    for rows in (56_934, 5_693):  # all of Fashion's train split (222 steps a pass), 10% (22)
        steps, note = steps_per_epoch(cfg, rows)
        assert steps * cfg.train.epochs >= 4000 > (steps - 1) * cfg.train.epochs and "passes" in note
    tiny = load_config("configs/digits_dcgan_tiny.yaml")
    assert steps_per_epoch(tiny, 1_440) == (11, "")  # min_steps: 0
    table = load_config("configs/adult_tvae.yaml")
    assert steps_per_epoch(table, 10_000)[1] == ""  # tables: one pass per epoch unless set
    more = load_config("configs/adult_tvae.yaml", ["train.min_steps=10000"])
    assert steps_per_epoch(more, 10_000)[0] * more.train.epochs >= 10_000


def test_preview_has_one_row_per_class(tmp_path):
    import pyarrow.parquet as pq
    from PIL import Image

    from gen_pipeline.kinds.image.pictures import preview_grid

    tr = ImageTransformer(SPEC)
    x = np.zeros((300, 74), np.float32)
    labels = np.arange(300) % 7  # classes 7..9 never drawn: their rows stay blank
    x[:, :64] = (labels[:, None] + 1) / 10
    x[np.arange(300), 64 + labels] = 1.0
    pq.write_table(tr.inverse_to_arrow(x), tmp_path / "part-0.parquet")
    png = preview_grid(tmp_path, tr)
    with Image.open(png) as im:
        a = np.asarray(im)[::2, ::2]  # undo the 2x scale
    assert a.shape == (10 * 10 + 2, 10 * 10 + 2)  # 10 rows (one per class) of 10
    for c in range(10):
        cell = a[2 + c * 10 + 3, 2 + 3]
        assert cell == (round((c + 1) / 10 * 255) if c < 7 else 255), (c, cell)


def test_many_classes_show_an_evenly_spaced_sample():
    from gen_pipeline.kinds.image.pictures import shown_classes

    assert shown_classes(7).tolist() == list(range(7))
    rows = shown_classes(100)
    assert len(rows) == 20 and rows[0] == 0 and rows[-1] == 99


def test_bf16_autocast_on_cpu_only_for_images_and_only_where_the_cpu_has_it():
    from gen_pipeline.kinds import kind_of
    from gen_pipeline.training.shell import bf16_autocast

    cpu, native = torch.device("cpu"), bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    image, table = load_config("configs/fashion_dcgan.yaml"), load_config("configs/adult_tvae.yaml")
    assert bf16_autocast(image, kind_of(image), cpu) is native  # the image kind's default
    assert bf16_autocast(table, kind_of(table), cpu) is False  # tables: float32
    off = load_config("configs/fashion_dcgan.yaml", ["train.cpu_precision=fp32"])
    assert bf16_autocast(off, kind_of(off), cpu) is False
    on = load_config("configs/adult_tvae.yaml", ["train.cpu_precision=bf16"])
    assert bf16_autocast(on, kind_of(on), cpu) is native
    assert bf16_autocast(table, kind_of(table), torch.device("cuda")) is True  # train.precision on a GPU

"""The model families on small data: they learn, they reproduce from a seed, they resume."""

import numpy as np
import pytest
import torch

from gen_pipeline.config import ModelConfig
from gen_pipeline.training.loaders import memory_source
from gen_pipeline.models import build_model
from gen_pipeline.training.checkpoints import load_checkpoint, save_checkpoint
from gen_pipeline.training.loop import fit
from gen_pipeline.spans import Span

PROBS = np.array([0.6, 0.3, 0.1])
SPANS = [Span("continuous", 0, 1), Span("categorical", 1, 4, cond=True, freqs=tuple(PROBS)),
         Span("categorical", 4, 6, cond=True, freqs=(1 - PROBS[0], PROBS[0]))]


def _data(n=4000, seed=0) -> torch.Tensor:
    """A continuous value whose mean depends on a 3-way category; a binary column that copies it."""
    rng = np.random.default_rng(seed)
    cat = rng.choice(3, n, p=PROBS)
    x = np.zeros((n, 6), dtype=np.float32)
    x[:, 0] = rng.normal(cat * 1.5 - 1.5, 0.3)
    x[np.arange(n), 1 + cat] = 1
    x[np.arange(n), 4 + (cat == 0)] = 1
    return torch.from_numpy(x)


def _model(family, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(family=family, latent_dim=8, hidden_dims=(64, 64), discriminator_dims=(64, 64), **kw)
    m = build_model(cfg, SPANS, 6)
    m.configure_optimizers(2e-3 if family.startswith("tvae") else 1e-3, 0.0)
    return m


def _train(model, data, epochs, state=None):
    src = memory_source(data, 0, 1, 200, seed=3)
    return fit(model, src, epochs=epochs, steps_per_epoch=len(data) // 200, batch_rows=200,
               device=torch.device("cpu"), state=state, log=None)


def _category_freq(samples: torch.Tensor) -> np.ndarray:
    return samples[:, 1:4].mean(0).numpy()


def test_vae_learns_marginals_and_dependence():
    data = _data()
    model = _model("tvae")
    state = _train(model, data, 80)
    assert state.history[-1]["loss"] < 0.5 * state.history[0]["loss"]
    s = model.sample(4000, torch.Generator().manual_seed(1))
    assert np.abs(_category_freq(s) - PROBS).sum() / 2 < 0.08  # total variation distance
    # the binary span must follow the category (it copies "category == 0")
    agree = (s[:, 1] == 1) == (s[:, 5] == 1)
    assert agree.float().mean() > 0.9
    # the continuous value's mean per category is learned
    for k in range(3):
        rows = s[:, 1 + k] == 1
        assert abs(s[rows, 0].mean().item() - (k * 1.5 - 1.5)) < 0.4


def test_vae_score_flags_outliers():
    data = _data()
    model = _model("tvae")
    _train(model, data, 15)
    normal = model.score(data[:500])
    odd = data[:500].clone()
    odd[:, 0] = 8.0  # far outside every category's range
    assert model.score(odd).mean() > normal.mean() + 10


@pytest.mark.parametrize("objective", ["bce", "wgan_gp"])
def test_gan_learns_categorical_marginal_and_honours_conditions(objective):
    data = _data()
    model = _model("gan", pac=4, objective=objective)
    state = _train(model, data, 30)
    assert all(np.isfinite(h["loss_d"]) and np.isfinite(h["loss_g"]) for h in state.history)
    assert state.history[-1]["loss_cond"] < 0.5 * state.history[0]["loss_cond"]  # learns to obey
    s = model.sample(4000, torch.Generator().manual_seed(1))
    assert np.abs(_category_freq(s) - PROBS).sum() / 2 < 0.2
    assert torch.allclose(s[:, 1:4].sum(1), torch.ones(4000))  # one-hot rows
    # Conditioned on the rarest category (10% of rows), it mostly produces that category, and the
    # continuous value follows it (mean 1.5 for category 2).
    rare = model.sample(2000, torch.Generator().manual_seed(2), fixed={1: 2})
    assert rare[:, 3].mean() > 0.8
    assert abs(rare[rare[:, 3] == 1, 0].mean().item() - 1.5) < 0.6


def test_unconditional_gan_still_trains():
    model = _model("gan", pac=4, conditional=False)
    state = _train(model, _data(1000), 3)
    assert model.cond_dim == 0 and np.isfinite(state.history[-1]["loss_d"])


def test_gan_has_no_anomaly_score():
    from gen_pipeline.models import FAMILIES

    assert not FAMILIES["gan"].can_score and FAMILIES["tvae"].can_score  # declared where registered
    with pytest.raises(NotImplementedError):
        _model("gan").score(_data(10))


@pytest.mark.parametrize("family", ["tvae", "gan", "tvae_mix", "tvae_ar"])
def test_sampling_reproduces_from_a_seed(family):
    model = _model(family)
    a = model.sample(300, torch.Generator().manual_seed(5))
    b = model.sample(300, torch.Generator().manual_seed(5))
    c = model.sample(300, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("family", ["tvae", "gan", "tvae_mix", "tvae_ar"])
def test_resume_from_checkpoint_matches_an_unbroken_run(family, tmp_path):
    torch.set_num_threads(1)
    data = _data(1200)
    torch.manual_seed(11)
    unbroken = _model(family)
    torch.manual_seed(11)
    _train(unbroken, data, 4)

    torch.manual_seed(11)
    first = _model(family)
    torch.manual_seed(11)
    state = _train(first, data, 2)
    save_checkpoint(tmp_path / "ckpt.pt", first, state)
    resumed = _model(family)
    _, state = load_checkpoint(tmp_path / "ckpt.pt", resumed)
    assert state.start_epoch == 2
    _train(resumed, data, 4, state=state)
    for (k, a), b in zip(unbroken.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k


def test_numpy_forward_of_a_linear_relu_stack_matches_torch():
    from torch import nn

    from gen_pipeline.models.base import forward_numpy, mlp

    torch.manual_seed(0)
    seq, x = mlp([8, 32, 32, 5], last_act=False), torch.randn(1000, 8)
    with torch.no_grad():
        for block in (300, 2048):  # several blocks (the last one short), and one
            assert torch.allclose(forward_numpy(seq, x, block=block), seq(x), atol=1e-5)
        assert forward_numpy(seq, x).T.is_contiguous()  # column-major: each output column contiguous
        g = torch.Generator().manual_seed(1)
        drawn = forward_numpy(seq, lambda rows: torch.randn(rows, 8, generator=g), n=1000, block=300)
        assert torch.equal(drawn, forward_numpy(seq, torch.randn(1000, 8, generator=torch.Generator().manual_seed(1)),
                                                block=300))  # input drawn block by block: the same rows
        relu_last = mlp([8, 16, 5], last_act=True)
        assert torch.allclose(forward_numpy(relu_last, x, block=300), relu_last(x), atol=1e-5)
        other = nn.Sequential(nn.Linear(8, 4), nn.Tanh())  # not Linear/ReLU only: torch runs it
        assert torch.equal(forward_numpy(other, x), other(x))


def test_drawn_categories_follow_the_softmax_of_each_span():
    from gen_pipeline.models.base import draw_categories

    spans = [Span("continuous", 0, 1), Span("categorical", 1, 4), Span("categorical", 4, 6)]
    n = 200_000
    logits = torch.tensor([0.0, 1.0, 0.0, -1.0, 300.0, -300.0])  # extreme logits: no overflow
    x = logits.repeat(n, 1)
    codes = draw_categories(x, spans, torch.Generator().manual_seed(0))
    assert codes.shape == (n, 2) and codes.dtype == torch.int64
    freq = torch.bincount(codes[:, 0], minlength=3).double() / n
    assert torch.allclose(freq, torch.softmax(logits[1:4].double(), 0), atol=0.005)
    assert (codes[:, 1] == 0).all()
    assert torch.equal(codes, draw_categories(x, spans, torch.Generator().manual_seed(0)))  # seeded
    column_major = x.T.contiguous().T  # as forward_numpy returns it: read in place, same draws
    assert torch.equal(codes, draw_categories(column_major, spans, torch.Generator().manual_seed(0)))


def test_tvae_nll_of_all_spans_at_once_equals_one_cross_entropy_per_span():
    """The one-pass categorical term (spans of different widths, logits far apart) against the
    plain per-span cross-entropy, value and gradient."""
    from torch.nn import functional as F

    spans = [Span("continuous", 0, 1), Span("categorical", 1, 4), Span("categorical", 4, 6),
             Span("categorical", 6, 11)]
    model = build_model(ModelConfig(family="tvae", latent_dim=4, hidden_dims=(8,)), spans, 11)
    torch.manual_seed(1)
    x = torch.zeros(64, 11)
    x[:, 0] = torch.randn(64)
    for s in spans[1:]:
        x[torch.arange(64), s.start + torch.randint(s.end - s.start, (64,))] = 1.0
    recon = torch.randn(64, 11)
    recon[:, 4] += 80.0  # one span's logits far above another's: the shift must be per span
    recon.requires_grad_(True)
    got = model._nll_per_row(x, recon)
    sigma = model._sigma()[0]
    ref = 0.5 * ((x[:, 0] - recon[:, 0]) / sigma) ** 2 + torch.log(sigma) + 0.5 * np.log(2 * np.pi)
    for s in spans[1:]:
        ref = ref + F.cross_entropy(recon[:, s.start:s.end], x[:, s.start:s.end].argmax(1), reduction="none")
    assert torch.allclose(got, ref, atol=1e-5)
    g_got, = torch.autograd.grad(got.sum(), recon)
    g_ref, = torch.autograd.grad(ref.sum(), recon)
    assert torch.allclose(g_got, g_ref, atol=1e-6)
    assert "_cat_grid" not in model.state_dict()  # index buffers are rebuilt, never saved


@pytest.mark.parametrize("family", ["tvae", "tvae_mix", "tvae_ar", "gan"])
def test_the_same_config_data_and_seed_give_the_same_weights(family):
    """Reproducible fits on the CPU: two trainings from the same seed end with identical weights
    (the loop reseeds torch from (seed, epoch) and the memory loader shuffles from (seed, epoch,
    rank)); a different seed gives different ones."""
    def trained(seed):
        torch.manual_seed(seed)
        model = _model(family)
        fit(model, memory_source(_data(1000), 0, 1, 200, seed=seed), epochs=2, steps_per_epoch=5, batch_rows=200,
            device=torch.device("cpu"), log=None, seed=seed)
        return model.state_dict()

    a, b, c = trained(0), trained(0), trained(1)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())

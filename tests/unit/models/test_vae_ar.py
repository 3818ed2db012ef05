"""The VAE with an autoregressive decoder (``tvae_ar``): its masks let each span see only the
spans before it, its span-by-span sampler computes exactly what the training forward computes,
and on a slice of the real Adult file it keeps the sex/relationship dependence that the TVAE's
decoder loses."""

import numpy as np
import pytest
import torch

from gen_pipeline.config import ModelConfig
from gen_pipeline.models import build_model
from gen_pipeline.models.vae_ar import _LOG_SIGMA, _SamplingPlan, span_order
from gen_pipeline.spans import Span
from tests.unit.models.test_vae_mix import adult_slice

SPANS = [Span("continuous", 0, 1, bounded=True), Span("categorical", 1, 4),  # a VGM number and its mode
         Span("categorical", 4, 6, cond=True, freqs=(0.5, 0.5)),
         Span("continuous", 6, 7), Span("categorical", 7, 9),  # a number and its null flag
         Span("categorical", 9, 12, cond=True, freqs=(0.3, 0.3, 0.4))]


def _model(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(**{"family": "tvae_ar", "latent_dim": 4, "hidden_dims": (16,),
                         "decoder_hidden_dims": (32, 24), **kw})
    return build_model(cfg, SPANS, 12)


def test_span_order_puts_a_columns_mode_and_null_flag_before_its_value():
    assert span_order(SPANS) == [1, 0, 2, 4, 3, 5]


def test_each_spans_output_depends_only_on_the_spans_before_it():
    dec = _model().net.decoder
    z, x = torch.randn(64, 4), torch.rand(64, 12)
    base = dec(z, x)
    for rank, i in enumerate(dec.order):  # change this span and every later one
        later = [SPANS[j] for j in dec.order[rank:]]
        x2 = x.clone()
        for s in later:
            x2[:, s.start:s.end] = torch.rand(64, s.end - s.start)
        moved = (dec(z, x2) - base).abs().amax(0)
        s = SPANS[i]
        assert moved[s.start:s.end].max() < 1e-6, (rank, s)
        if rank + 1 < len(SPANS):
            assert moved.max() > 1e-3  # a later span's outputs do move


def test_the_span_by_span_sampler_draws_from_the_training_forwards_outputs():
    model = _model()
    plan = _SamplingPlan(model.net.decoder, SPANS, 12, 4)
    rng = np.random.default_rng(0)
    rows = 50
    z = rng.standard_normal((rows, 4)).astype(np.float32)
    u = rng.random((len(SPANS), rows)).astype(np.float32)
    noise = rng.standard_normal((len(SPANS), rows)).astype(np.float32)
    out = np.zeros((12, rows), dtype=np.float32)
    codes = np.empty((rows, plan.n_codes), dtype=np.int64)
    plan.draw(z, u, noise, out, codes)
    x = out.T.copy()  # the drawn rows as the decoder's training input: one-hot categories
    for c, s in enumerate(s for s in SPANS if s.kind == "categorical"):
        x[np.arange(rows), s.start + codes[:, c]] = 1.0
    full = model.net.decoder(torch.from_numpy(z), torch.from_numpy(x)).detach().numpy()
    cont = [i for i, s in enumerate(SPANS) if s.kind == "continuous"]
    for r, i in enumerate(model.net.decoder.order):
        s = SPANS[i]
        if s.kind == "categorical":  # the inverse-CDF draw from the forward's softmax
            p = np.exp(full[:, s.start:s.end] - full[:, s.start:s.end].max(1, keepdims=True))
            c = np.cumsum(p, 1)
            k = (c < u[r][:, None] * c[:, -1:]).sum(1)
            assert (x[np.arange(rows), s.start + k] == 1).all()
        else:
            mean = np.tanh(full[:, s.start]) if s.bounded else full[:, s.start]
            scale = np.exp(np.clip(full[:, 12 + cont.index(i)], *_LOG_SIGMA))
            np.testing.assert_allclose(x[:, s.start], mean + scale * noise[r], atol=1e-5)


def test_sampling_and_score_reproduce():
    model = _model().eval()
    a = model.sample(300, torch.Generator().manual_seed(5))
    assert torch.equal(a, model.sample(300, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, model.sample(300, torch.Generator().manual_seed(6)))
    x = model.sample(40, torch.Generator().manual_seed(1))
    assert torch.isfinite(model.score(x)).all()
    assert torch.allclose(model.score(x[:7]), model.score(x)[:7], atol=1e-5)  # a row's score is its own


@pytest.fixture(scope="module")
def adult(adult_lines):
    return adult_slice(adult_lines)


def _female_husbands(t, model, n=5000) -> float:
    rows = t.inverse_transform(model.sample(n, torch.Generator().manual_seed(3)).numpy())
    return float((rows.loc[rows["sex"] == "Female", "relationship"] == "Husband").mean())


def test_the_autoregressive_decoder_keeps_sex_and_relationship_together(adult):
    """On 3,000 real Adult rows (no woman is a husband), trained the same short way, the TVAE's
    samples make husbands of many women; the autoregressive decoder's make almost none."""
    from gen_pipeline.training.loaders import memory_source
    from gen_pipeline.training.loop import fit

    t, _, train, held_out = adult
    shares = {}
    for family in ("tvae", "tvae_ar"):
        torch.set_num_threads(1)
        torch.manual_seed(0)
        cfg = ModelConfig(family=family, latent_dim=16, hidden_dims=(128, 128), decoder_hidden_dims=(256, 256))
        model = build_model(cfg, t.spans, t.output_dim)
        model.configure_optimizers(3e-3, 0.0)
        fit(model, memory_source(train, 0, 1, 100, seed=1), epochs=8, steps_per_epoch=len(train) // 100,
            batch_rows=100, device=torch.device("cpu"), log=None, seed=2)
        shares[family] = _female_husbands(t, model.eval())
    assert shares["tvae_ar"] < 0.02 and shares["tvae"] > 3 * shares["tvae_ar"], shares

"""The GAN's moving average of generator weights: what sampling uses, and what checkpoints keep."""

import copy

import torch

from gen_pipeline.config import ModelConfig
from gen_pipeline.models import build_model
from gen_pipeline.spans import Span
from gen_pipeline.training.checkpoints import load_checkpoint, save_checkpoint
from gen_pipeline.training.loaders import memory_source
from gen_pipeline.training.loop import fit

SPANS = [Span("continuous", 0, 1), Span("categorical", 1, 4, cond=True, freqs=(0.6, 0.3, 0.1))]


def _gan(**kw):
    torch.manual_seed(0)
    m = build_model(ModelConfig(family="gan", latent_dim=4, hidden_dims=(16,), discriminator_dims=(16,), pac=2,
                                **kw), SPANS, 4)
    m.configure_optimizers(1e-2, 0.0)
    return m


def _data(n=400):
    g = torch.Generator().manual_seed(0)
    cat = torch.multinomial(torch.tensor([0.6, 0.3, 0.1]), n, replacement=True, generator=g)
    x = torch.zeros(n, 4)
    x[:, 0] = torch.randn(n, generator=g) + cat
    x[torch.arange(n), 1 + cat] = 1
    return x


def _train(model, epochs, state=None):
    return fit(model, memory_source(_data(), 0, 1, 100, seed=3), epochs=epochs, steps_per_epoch=4, batch_rows=100,
               device=torch.device("cpu"), state=state, log=None)


def test_sampling_uses_the_moving_average_and_a_checkpoint_keeps_it(tmp_path):
    model = _gan(ema_decay=0.9)
    state = _train(model, 3)
    assert model.ema_steps.item() == 12
    assert any(not torch.equal(a, b) for a, b in zip(model.generator.parameters(),
                                                      model.generator_ema.parameters()))
    # The same rows as the raw generator given the average's weights: sampling reads the average.
    raw = _gan(ema_decay=0.0)
    raw.generator.load_state_dict(model.generator_ema.state_dict())
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert torch.equal(model.sample_raw(50, g()), raw.sample_raw(50, g()))
    assert not torch.equal(model.sample_raw(50, g()), _swap_in_raw_weights(model).sample_raw(50, g()))
    # A checkpoint round trip keeps the average and its step count, so the samples are the same.
    save_checkpoint(tmp_path / "c.pt", model, state)
    back = _gan(ema_decay=0.9)
    load_checkpoint(tmp_path / "c.pt", back)
    assert back.ema_steps.item() == 12 and torch.equal(model.sample_raw(50, g()), back.sample_raw(50, g()))


def test_weights_saved_without_an_average_load_and_sample_as_saved():
    old = _gan(ema_decay=0.0)
    _train(old, 1)
    new = _gan(ema_decay=0.99)
    new.load_state_dict(old.state_dict())  # a model registered before the GAN kept an average
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert torch.equal(new.sample_raw(50, g()), old.sample_raw(50, g()))


def _swap_in_raw_weights(model):
    m = copy.deepcopy(model)
    m.generator_ema.load_state_dict(m.generator.state_dict())
    return m


def test_a_fixed_condition_may_differ_per_row():
    model = _gan()
    asked = torch.tensor([2, 0, 1, 2])
    cond = model._inference_conditions(4, None, {1: asked})
    assert torch.equal(cond.argmax(1), asked) and torch.equal(cond.sum(1), torch.ones(4))
    assert torch.equal(model._inference_conditions(3, None, {1: 1}).argmax(1), torch.ones(3, dtype=torch.long))

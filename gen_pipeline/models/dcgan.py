"""DCGAN for images (Radford et al. 2016), optionally class-conditional (Mirza & Osindero 2014).

The classic binary cross-entropy game (Goodfellow et al. 2014) with the non-saturating
generator loss, plus the usual stabilisers: a generator with BatchNorm and ReLU, a
discriminator with strided convs, leaky ReLU and dropout, N(0, 0.02) init, Adam with
beta1 = 0.5, and one-sided label smoothing (real target 0.9; Salimans et al. 2016).
Pixels come in [0, 1]; the discriminator sees them centred to [-1, 1].

The small-data remedies, each switched by a ``ModelConfig`` field (defaults in ``ModelConfig``):

- ``diff_augment``: DiffAugment (Zhao et al. 2020, ``gen_pipeline.models.augment``): real and
  generated images go through the same random differentiable transformations before every
  discriminator forward, in both players' steps, so the discriminator cannot memorise a small set.
- ``spectral_norm``: every discriminator layer divided by its largest singular value
  (Miyato et al. 2018).
- ``ema_decay``: an exponential moving average of the generator's weights (Yazici et al. 2019),
  with the usual warm-up min(decay, (1 + t) / (10 + t)) at step t. It is a submodule
  (``generator_ema``), so checkpoints and the registered model carry it, and ``sample`` draws
  from it. BatchNorm's running statistics are averaged the same way.
- ``upsample: resize``: nearest-neighbour x2 then a 3x3 conv instead of transposed convs
  (Odena et al. 2016).
- ``r1_gamma``: the zero-centred penalty gamma/2 * E||grad_x D(x)||^2 on (augmented) real images
  (Mescheder et al. 2018), every ``r1_every`` steps with its weight multiplied by ``r1_every``
  (lazy regularisation, Karras et al. 2020). Off by default.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from gen_pipeline.models.augment import diff_augment, parse_policy
from gen_pipeline.models.base import GenerativeModel, adam, update_ema
from gen_pipeline.models.conv import (DownTower, UpTower, geometry, image_channels, init_dcgan, label_planes,
                                       label_start, one_hot_labels, split_batch)

REAL_TARGET = 0.9  # one-sided label smoothing


class _Generator(nn.Module):
    def __init__(self, latent: int, k: int, side: int, c: int, upsample: str = "transposed", channels: int = 1):
        super().__init__()
        self.tower = UpTower(latent + k, side, c, batch_norm=True, upsample=upsample, channels=channels)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.tower(torch.cat([z, y], 1)))  # (B, C, H, W) in [0, 1]


class _Discriminator(nn.Module):
    def __init__(self, k: int, side: int, c: int, spectral_norm: bool = False, channels: int = 1):
        super().__init__()
        self.side = side
        self.features = DownTower(channels + k, side, c, dropout=0.3, spectral_norm=spectral_norm)
        head = nn.Linear(self.features.out_dim, 1)
        self.head = nn.utils.parametrizations.spectral_norm(head) if spectral_norm else head

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x * 2 - 1, label_planes(y, self.side)], 1)  # (B, C + K, H, W)
        return self.head(self.features(h)).squeeze(1)  # (B,) logits


class DCGAN(GenerativeModel):
    max_sample_chunk = 4096  # images per forward when generating: bounds activation memory

    def __init__(self, cfg, spans, data_dim):
        super().__init__(cfg, spans, data_dim)
        self.side, k = geometry(spans, data_dim)
        self.channels = image_channels(spans)
        self.k = k if cfg.conditional else 0
        self.conditional = self.k > 0
        self.label_start = label_start(spans)
        c = cfg.base_channels
        self.generator = _Generator(cfg.latent_dim, self.k, self.side, 2 * c, cfg.upsample, self.channels)
        self.discriminator = _Discriminator(self.k, self.side, c, cfg.spectral_norm, self.channels)
        self.apply(init_dcgan)
        self.augment = parse_policy(cfg.diff_augment)
        if cfg.ema_decay > 0:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
            self.register_buffer("ema_steps", torch.zeros(()))  # in the state dict: the warm-up resumes
        self._r1_step = 0
        object.__setattr__(self, "_g", self.generator)
        object.__setattr__(self, "_d", self.discriminator)

    def configure_optimizers(self, lr: float, weight_decay: float) -> None:
        betas = (0.5, 0.999)  # the DCGAN paper's setting
        self.optimizers = {
            "generator": adam(self.generator.parameters(), lr=lr, betas=betas),
            "discriminator": adam(self.discriminator.parameters(), lr=lr, betas=betas),
        }

    def distribute(self, wrap) -> None:
        object.__setattr__(self, "_g", wrap(self.generator))
        object.__setattr__(self, "_d", wrap(self.discriminator))

    def _condition(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.k else y[:, :0]

    def _aug(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.augment) if self.augment else x

    def train_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        real, y = split_batch(batch, self.side, self.channels)
        y = self._condition(y)
        n = real.shape[0]
        opt_d, opt_g = self.optimizers["discriminator"], self.optimizers["generator"]

        # Discriminator: real and generated images (with the real labels) in one forward (one DDP sync).
        z = torch.randn(n, self.cfg.latent_dim, device=batch.device)
        with torch.no_grad():
            fake = self._g(z, y)
        r1 = self.cfg.r1_gamma > 0 and self._r1_step % self.cfg.r1_every == 0
        self._r1_step += 1
        real_in = self._aug(real).detach().requires_grad_(r1)
        logits = self._d(torch.cat([real_in, self._aug(fake)]), torch.cat([y, y]))
        targets = torch.cat([torch.full((n,), REAL_TARGET, device=batch.device), torch.zeros(n, device=batch.device)])
        loss_d = F.binary_cross_entropy_with_logits(logits.float(), targets)
        metrics = {}
        if r1:
            grad, = torch.autograd.grad(logits[:n].float().sum(), real_in, create_graph=True)
            penalty = grad.pow(2).flatten(1).sum(1).mean()
            loss_d = loss_d + self.cfg.r1_gamma / 2 * self.cfg.r1_every * penalty
            metrics["r1"] = penalty.detach()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        # Generator: non-saturating loss, -log D(G(z)); the raw discriminator so only G syncs.
        z = torch.randn(n, self.cfg.latent_dim, device=batch.device)
        fake_logits = self.discriminator(self._aug(self._g(z, y)), y)
        loss_g = F.binary_cross_entropy_with_logits(fake_logits.float(), torch.ones_like(fake_logits.float()))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if self.cfg.ema_decay > 0:
            self._update_ema()

        with torch.no_grad():
            d_real = torch.sigmoid(logits[:n].float()).mean()
            d_fake = torch.sigmoid(logits[n:].float()).mean()
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "d_real": d_real, "d_fake": d_fake, **metrics}

    def _update_ema(self) -> None:
        update_ema(self.generator_ema, self.generator, self.ema_steps, self.cfg.ema_decay)

    @torch.no_grad()
    def sample_raw(self, n: int, generator: torch.Generator | None = None,
                   fixed: dict | None = None) -> torch.Tensor:
        """(n, C*H*W + K): pixels in [0, 1], then the condition's one-hot (zeros if unconditional);
        from the generator's moving average when ``ema_decay`` > 0."""
        net = self.generator_ema if self.cfg.ema_decay > 0 else self.generator
        was_training = net.training
        net.eval()
        device = next(net.parameters()).device
        z = torch.randn(n, self.cfg.latent_dim, generator=generator, device=device)
        y = one_hot_labels(n, self.k, fixed, self.label_start, generator, device)
        x = net(z, y).reshape(n, -1)
        net.train(was_training)
        pad = torch.zeros(n, self.data_dim - x.shape[1] - y.shape[1], device=device)
        return torch.cat([x, y, pad], 1)

"""DCGAN for images (Radford et al. 2016), optionally class-conditional (Mirza & Osindero 2014).

The classic binary cross-entropy game (Goodfellow et al. 2014) with the non-saturating
generator loss, plus the usual stabilisers: transposed-conv generator with BatchNorm and ReLU,
a discriminator with strided convs, leaky ReLU and dropout, N(0, 0.02) init, Adam with
beta1 = 0.5, and one-sided label smoothing (real target 0.9; Salimans et al. 2016).
Pixels come in [0, 1]; the discriminator sees them centred to [-1, 1].
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gen_pipeline.models.base import GenerativeModel, adam, register
from gen_pipeline.models.conv import DownTower, UpTower, geometry, init_dcgan, label_planes, one_hot_labels, \
    split_batch

REAL_TARGET = 0.9  # one-sided label smoothing


class _Generator(nn.Module):
    def __init__(self, latent: int, k: int, side: int, c: int):
        super().__init__()
        self.tower = UpTower(latent + k, side, c, batch_norm=True)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.tower(torch.cat([z, y], 1)))  # (B, 1, S, S) in [0, 1]


class _Discriminator(nn.Module):
    def __init__(self, k: int, side: int, c: int):
        super().__init__()
        self.side = side
        self.features = DownTower(1 + k, side, c, dropout=0.3)
        self.head = nn.Linear(self.features.out_dim, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x * 2 - 1, label_planes(y, self.side)], 1)  # (B, 1 + K, S, S)
        return self.head(self.features(h)).squeeze(1)  # (B,) logits


@register("dcgan")
class DCGAN(GenerativeModel):
    max_sample_chunk = 4096  # images per forward when generating: bounds activation memory

    def __init__(self, cfg, spans, data_dim):
        super().__init__(cfg, spans, data_dim)
        self.side, k = geometry(spans, data_dim)
        self.k = k if cfg.conditional else 0
        c = cfg.base_channels
        self.generator = _Generator(cfg.latent_dim, self.k, self.side, 2 * c)
        self.discriminator = _Discriminator(self.k, self.side, c)
        self.apply(init_dcgan)
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

    def train_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        real, y = split_batch(batch, self.side)
        y = self._condition(y)
        n = real.shape[0]
        opt_d, opt_g = self.optimizers["discriminator"], self.optimizers["generator"]

        # Discriminator: real and generated images (with the real labels) in one forward (one DDP sync).
        z = torch.randn(n, self.cfg.latent_dim, device=batch.device)
        with torch.no_grad():
            fake = self._g(z, y)
        logits = self._d(torch.cat([real, fake]), torch.cat([y, y]))
        targets = torch.cat([torch.full((n,), REAL_TARGET, device=batch.device), torch.zeros(n, device=batch.device)])
        loss_d = F.binary_cross_entropy_with_logits(logits.float(), targets)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        # Generator: non-saturating loss, -log D(G(z)); the raw discriminator so only G syncs.
        z = torch.randn(n, self.cfg.latent_dim, device=batch.device)
        fake_logits = self.discriminator(self._g(z, y), y)
        loss_g = F.binary_cross_entropy_with_logits(fake_logits.float(), torch.ones_like(fake_logits.float()))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

        with torch.no_grad():
            d_real = torch.sigmoid(logits[:n].float()).mean()
            d_fake = torch.sigmoid(logits[n:].float()).mean()
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "d_real": d_real, "d_fake": d_fake}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """(n, S*S + K): pixels in [0, 1], then the condition's one-hot (zeros if unconditional)."""
        was_training = self.generator.training
        self.generator.eval()
        device = next(self.generator.parameters()).device
        z = torch.randn(n, self.cfg.latent_dim, generator=generator, device=device)
        y = one_hot_labels(n, self.k, labels, generator, device)
        x = self.generator(z, y).reshape(n, -1)
        self.generator.train(was_training)
        pad = torch.zeros(n, self.data_dim - x.shape[1] - y.shape[1], device=device)
        return torch.cat([x, y, pad], 1)

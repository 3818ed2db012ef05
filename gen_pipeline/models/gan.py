"""GAN for tables (Goodfellow et al. 2014; Xu et al. 2019 for the tabular pieces): an MLP generator
whose categorical spans go through Gumbel-softmax, a PacGAN discriminator (Lin et al. 2018) that
judges ``pac`` rows at once, and the classic binary cross-entropy game with the non-saturating
generator loss.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gen_pipeline.models.base import GenerativeModel, register, sample_spans


class _Generator(nn.Module):
    def __init__(self, latent: int, hidden: list[int], data_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        dim = latent
        for h in hidden:
            layers += [nn.Linear(dim, h), nn.BatchNorm1d(h), nn.ReLU()]
            dim = h
        layers.append(nn.Linear(dim, data_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, D): raw continuous values and categorical logits


class _Discriminator(nn.Module):
    def __init__(self, data_dim: int, hidden: list[int], pac: int):
        super().__init__()
        self.pac = pac
        layers: list[nn.Module] = []
        dim = data_dim * pac
        for h in hidden:
            layers += [nn.Linear(dim, h), nn.LeakyReLU(0.2), nn.Dropout(0.5)]
            dim = h
        layers.append(nn.Linear(dim, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, x.shape[1] * self.pac)).squeeze(1)  # (B / pac,) logits


@register("gan")
class TabularGAN(GenerativeModel):
    def __init__(self, cfg, spans, data_dim):
        super().__init__(cfg, spans, data_dim)
        self.generator = _Generator(cfg.latent_dim, list(cfg.hidden_dims), data_dim)
        self.discriminator = _Discriminator(data_dim, list(cfg.discriminator_dims), cfg.pac)
        object.__setattr__(self, "_g", self.generator)
        object.__setattr__(self, "_d", self.discriminator)

    def configure_optimizers(self, lr: float, weight_decay: float) -> None:
        betas = (0.5, 0.9)  # as in CTGAN's paper setup
        self.optimizers = {
            "generator": torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas, weight_decay=weight_decay),
            "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=betas,
                                              weight_decay=weight_decay),
        }

    def distribute(self, wrap) -> None:
        object.__setattr__(self, "_g", wrap(self.generator))
        object.__setattr__(self, "_d", wrap(self.discriminator))

    def _activate(self, raw: torch.Tensor) -> torch.Tensor:
        """Differentiable outputs: Gumbel-softmax per categorical span (Jang et al. 2017)."""
        parts = []
        for s in self.spans:
            chunk = raw[:, s.start:s.end]
            parts.append(F.gumbel_softmax(chunk, tau=self.cfg.gumbel_tau) if s.kind == "categorical" else chunk)
        return torch.cat(parts, dim=1)

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        n = batch.shape[0] - batch.shape[0] % self.cfg.pac
        real = batch[:n]
        opt_d, opt_g = self.optimizers["discriminator"], self.optimizers["generator"]

        # Discriminator: real batch and an equal-size generated batch in one forward (one DDP sync).
        z = torch.randn(n, self.cfg.latent_dim, device=batch.device)
        with torch.no_grad():
            fake = self._activate(self._g(z))
        logits = self._d(torch.cat([real, fake]))
        half = logits.shape[0] // 2
        labels = torch.cat([torch.ones(half, device=batch.device), torch.zeros(half, device=batch.device)])
        loss_d = F.binary_cross_entropy_with_logits(logits.float(), labels)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        # Generator: make the discriminator call its samples real (non-saturating loss).
        z = torch.randn(n, self.cfg.latent_dim, device=batch.device)
        fake_logits = self.discriminator(self._activate(self._g(z)))
        loss_g = F.binary_cross_entropy_with_logits(fake_logits.float(), torch.ones_like(fake_logits.float()))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

        with torch.no_grad():
            d_real = torch.sigmoid(logits[:half]).mean().item()
            d_fake = torch.sigmoid(logits[half:]).mean().item()
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "d_real": d_real, "d_fake": d_fake}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        was_training = self.generator.training
        self.generator.eval()
        device = next(self.generator.parameters()).device
        z = torch.randn(n, self.cfg.latent_dim, generator=generator, device=device)
        out = sample_spans(self.generator(z), self.spans, generator)
        self.generator.train(was_training)
        return out

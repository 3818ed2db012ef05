"""A small MLP VAE for standardised 1-D signals (Kingma & Welling 2014): Gaussian decoder with
one learned scale, KL to N(0, I); its negative ELBO is the anomaly score."""

from __future__ import annotations

import math

import torch
from torch import nn

from gen_pipeline.models.base import GenerativeModel, adam, gaussian_kl, mlp


class SignalVAE(GenerativeModel):
    def __init__(self, cfg, spans, data_dim):
        super().__init__(cfg, spans, data_dim)
        h = list(cfg.hidden_dims)
        self.encoder = mlp([data_dim, *h, 2 * cfg.latent_dim], last_act=False)
        self.decoder = mlp([cfg.latent_dim, *h[::-1], data_dim], last_act=False)
        self.log_sigma = nn.Parameter(torch.zeros(()))
        object.__setattr__(self, "_enc", self.encoder)
        object.__setattr__(self, "_dec", self.decoder)

    def configure_optimizers(self, lr: float, weight_decay: float) -> None:
        self.optimizers = {"vae": adam(self.parameters(), lr=lr, weight_decay=weight_decay)}

    def distribute(self, wrap) -> None:
        object.__setattr__(self, "_enc", wrap(self.encoder))
        object.__setattr__(self, "_dec", wrap(self.decoder))

    def _neg_elbo(self, x: torch.Tensor, enc, dec, eps: torch.Tensor | None) -> torch.Tensor:
        mu, logvar = enc(x).chunk(2, dim=1)
        z = mu if eps is None else mu + torch.exp(0.5 * logvar) * eps
        recon = dec(z)
        nll = 0.5 * ((x - recon) / self.log_sigma.exp()).pow(2).sum(1) + x.shape[1] * (
            self.log_sigma + 0.5 * math.log(2 * math.pi))
        kl = gaussian_kl(mu, logvar)
        return nll + kl

    def train_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        opt = self.optimizers["vae"]
        opt.zero_grad(set_to_none=True)
        eps = torch.randn(batch.shape[0], self.cfg.latent_dim, device=batch.device)
        loss = self._neg_elbo(batch, self._enc, self._dec, eps).mean()
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def sample_raw(self, n: int, generator: torch.Generator | None = None, fixed=None) -> torch.Tensor:
        z = torch.randn(n, self.cfg.latent_dim, generator=generator)
        return self.decoder(z)

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self._neg_elbo(x, self.encoder, self.decoder, None)

    @torch.no_grad()
    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(x.shape[0], self.cfg.latent_dim, generator=generator)
        return -self._neg_elbo(x, self.encoder, self.decoder, eps)

"""Convolutional VAE for images (Kingma & Welling 2014), optionally class-conditional (a CVAE,
Sohn et al. 2015: the label enters the encoder as extra channels and the decoder beside z).

Likelihood per pixel on [0, 1] intensities: Bernoulli (binary cross-entropy on the logits) or
the continuous Bernoulli (Loaiza-Ganem & Cunningham 2019), which adds the log normaliser
log C(lambda) so that it is a proper density on [0, 1]. KL to N(0, I). Everything in nats per image.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from gen_pipeline.models.base import GenerativeModel, adam, gaussian_kl
from gen_pipeline.models.conv import (DownTower, UpTower, geometry, image_channels, label_planes, label_start,
                                       one_hot_labels, split_batch)


def cb_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda) of the continuous Bernoulli, lambda = sigmoid(logits), elementwise.

    C = 2 atanh(1 - 2 lambda) / (1 - 2 lambda); near lambda = 1/2 the ratio is 0/0, so a Taylor
    expansion takes over (as in the paper's reference code).
    """
    lam = torch.sigmoid(logits).clamp(1e-6, 1 - 1e-6)
    far = (lam < 0.49) | (lam > 0.51)
    safe = torch.where(far, lam, torch.full_like(lam, 0.4))
    exact = torch.log(torch.abs(2 * torch.atanh(1 - 2 * safe))) - torch.log(torch.abs(1 - 2 * safe))
    d = lam - 0.5
    taylor = math.log(2.0) + 4 / 3 * d ** 2 + 104 / 45 * d ** 4
    return torch.where(far, exact, taylor)


def cb_mean(logits: torch.Tensor) -> torch.Tensor:
    """Mean of the continuous Bernoulli: lambda / (2 lambda - 1) + 1 / (2 atanh(1 - 2 lambda))."""
    lam = torch.sigmoid(logits).clamp(1e-6, 1 - 1e-6)
    far = (lam < 0.49) | (lam > 0.51)
    safe = torch.where(far, lam, torch.full_like(lam, 0.4))
    exact = safe / (2 * safe - 1) + 1 / (2 * torch.atanh(1 - 2 * safe))
    return torch.where(far, exact, 0.5 + (lam - 0.5) / 3)  # first-order expansion near 1/2


class _ConvVAENet(nn.Module):
    """Encoder + decoder in one module, so one DDP wrapper syncs all of it."""

    def __init__(self, side: int, k: int, latent: int, c: int, upsample: str = "transposed", channels: int = 1):
        super().__init__()
        self.side, self.k = side, k
        self.encoder = DownTower(channels + k, side, c)
        self.to_stats = nn.Linear(self.encoder.out_dim, 2 * latent)  # mu and log-variance
        self.decoder = UpTower(latent + k, side, c, batch_norm=False, upsample=upsample, channels=channels)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(torch.cat([x, label_planes(y, self.side)], 1))
        mu, logvar = self.to_stats(h).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, y], 1)).flatten(1)  # (B, C*H*W) logits

    def forward(self, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor):
        mu, logvar = self.encode(x, y)
        z = mu + torch.exp(0.5 * logvar) * eps  # reparameterisation trick
        return self.decode(z, y), mu, logvar


class ConvVAE(GenerativeModel):
    max_sample_chunk = 4096  # images per forward when generating: bounds activation memory

    def __init__(self, cfg, spans, data_dim):
        super().__init__(cfg, spans, data_dim)
        self.side, k = geometry(spans, data_dim)
        self.channels = image_channels(spans)
        self.k = k if cfg.conditional else 0
        self.conditional = self.k > 0
        self.label_start = label_start(spans)
        self.net = _ConvVAENet(self.side, self.k, cfg.latent_dim, cfg.base_channels, cfg.upsample, self.channels)
        object.__setattr__(self, "_run", self.net)  # the DDP-wrapped view, not part of state_dict

    def configure_optimizers(self, lr: float, weight_decay: float) -> None:
        self.optimizers = {"vae": adam(self.net.parameters(), lr=lr, weight_decay=weight_decay)}

    def distribute(self, wrap) -> None:
        object.__setattr__(self, "_run", wrap(self.net))

    def _split(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = split_batch(batch, self.side, self.channels)
        return x, (y if self.k else y[:, :0])

    def nll(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) in nats per image: (B,). x: (B, C*H*W) in [0, 1]."""
        nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
        if self.cfg.likelihood == "continuous_bernoulli":
            nll = nll - cb_log_norm(logits).sum(1)
        return nll

    def train_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        opt = self.optimizers["vae"]
        opt.zero_grad(set_to_none=True)
        x, y = self._split(batch)
        eps = torch.randn(x.shape[0], self.cfg.latent_dim, device=batch.device)
        logits, mu, logvar = self._run(x, y, eps)
        nll = self.nll(x.flatten(1), logits.float()).mean()
        kl = gaussian_kl(mu.float(), logvar.float()).mean()
        loss = nll + kl  # the negative ELBO, nats per image
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), "recon_nll": nll.detach(), "kl": kl.detach()}

    def _mean(self, logits: torch.Tensor) -> torch.Tensor:
        return cb_mean(logits) if self.cfg.likelihood == "continuous_bernoulli" else torch.sigmoid(logits)

    @torch.no_grad()
    def sample_raw(self, n: int, generator: torch.Generator | None = None,
                   fixed: dict | None = None) -> torch.Tensor:
        """(n, C*H*W + K): the decoder's mean image for z ~ N(0, I) (the usual way to show VAE
        samples: per-pixel noise adds nothing a person or FID wants), then the condition."""
        device = self.net.to_stats.weight.device
        z = torch.randn(n, self.cfg.latent_dim, generator=generator, device=device)
        y = one_hot_labels(n, self.k, fixed, self.label_start, generator, device)
        x = self._mean(self.net.decode(z, y))
        pad = torch.zeros(n, self.data_dim - x.shape[1] - y.shape[1], device=device)
        return torch.cat([x, y, pad], 1)

    @torch.no_grad()
    def elbo(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A one-sample Monte-Carlo ELBO per image, in nats: (B,) (its mean is unbiased)."""
        x, y = self._split(batch)
        mu, logvar = self.net.encode(x, y)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps
        return -(self.nll(x.flatten(1), self.net.decode(z, y)) + gaussian_kl(mu, logvar))

    @torch.no_grad()
    def neg_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per image in nats, decoding the posterior mean: (B,)."""
        img, y = self._split(x)
        mu, logvar = self.net.encode(img, y)
        return self.nll(img.flatten(1), self.net.decode(mu, y)) + gaussian_kl(mu, logvar)

    def nll_floor(self, x: torch.Tensor) -> torch.Tensor:
        """The least -log p(x | z) any decoder can reach for these images, nats: (B,).

        Under the Bernoulli likelihood a grey pixel costs at least its own entropy H(x_i) (the
        cross-entropy to the perfect prediction p_i = x_i), so the negative ELBO of an image
        with large grey areas is high however well it is modelled, and one with few lit pixels
        is low: a T-shirt model rated trousers and sandals as more normal than T-shirts
        (Fashion-MNIST ROC-AUC 0.58; the complexity bias of likelihood scores, Nalisnick et al.
        2019). The continuous Bernoulli is a normalised density: floor 0.
        """
        if self.cfg.likelihood == "continuous_bernoulli":
            return torch.zeros(x.shape[0], device=x.device)
        img = self._split(x)[0].flatten(1).clamp(0.0, 1.0)
        return F.binary_cross_entropy(img, img, reduction="none").sum(1)

    @torch.no_grad()
    def score_and_neg_elbo(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(``score``, ``neg_elbo``) per image from one forward pass: (B,), (B,)."""
        neg = self.neg_elbo(x)
        return neg - self.nll_floor(x), neg

    def score_columns(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        score, neg = self.score_and_neg_elbo(x)
        return {"score": score, "neg_elbo": neg}

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Anomaly score per image in nats (higher = more anomalous): the negative ELBO above the
        image's ``nll_floor``, i.e. the KL term plus each pixel's KL from its value to the
        decoder's prediction. With the floor removed the T-shirt model's ROC-AUC is 0.92."""
        return self.score_and_neg_elbo(x)[0]

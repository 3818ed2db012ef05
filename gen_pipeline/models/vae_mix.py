"""TVAE with a learned mixture-of-Gaussians prior (family ``tvae_mix``).

The TVAE's likelihood (``vae.TabularVAE``: a Gaussian per continuous value, a softmax per
categorical span) with samples drawn from a mixture of ``prior_components`` diagonal Gaussians
over the latent space instead of N(0, I). Why: a VAE trained with N(0, I) leaves the aggregate
posterior q(z) = E_x q(z|x) far from N(0, I), so prior draws land where the encoder put no
training row and the decoder's categorical shares drift (the VampPrior's argument, Tomczak &
Welling 2018: the best prior is the aggregate posterior). A mixture fitted to q(z) draws where
the decoder was trained.

Two ways to train the mixture, both in the same single-phase ``train_step`` (one forward, one
backward, so DDP syncs every parameter each step):

- ``ex_post`` (default): the encoder and decoder train exactly as the TVAE's (closed-form KL to
  N(0, I)), while the mixture fits their detached posterior samples by maximum likelihood beside
  them: a density estimate of q(z), as the two-stage and ex-post-density VAEs do (Dai & Wipf
  2019; Ghosh et al. 2020), but with no second stage to schedule.
- ``joint``: the mixture is the ELBO's prior (Dilokthanakul et al. 2016); the KL term has no
  closed form, so each step uses the one-sample estimate log q(z|x) - log p(z).

On Adult ex post measured better than joint; the prior moved SDMetrics' pair trends, not the
female "Husband" rows, which the decoder makes even from real rows' codes (benchmarks/RESULTS.md).
Sampling costs one uniform and one normal vector per row more than the TVAE (a component by
inverse CDF, shifted and scaled), then the same numpy decoder forward. ``fixed`` conditions are
ignored (the bundle filters draws).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gen_pipeline.models.base import gaussian_kl
from gen_pipeline.models.vae import TabularVAE, _VAENet

_LOG_2PI = math.log(2 * math.pi)
_SCORE_DRAWS = 16  # latent draws for score()'s KL estimate: the same fixed draws for every row
_SCORE_SEED = 20_240_101
_PRIOR_LR_SCALE = 10.0
# Ex post, the mixture fits this many of each batch's posterior samples (the batch is shuffled):
# a density fit needs no more per step, and the (rows, K) terms cost a step more than the nets.
_PRIOR_FIT_ROWS = 128


class _MixturePrior(nn.Module):
    """p(z) = sum_k pi_k N(z; m_k, diag(s_k^2)), all three learned."""

    def __init__(self, components: int, latent: int):
        super().__init__()
        # Means spread like draws from N(0, I) so the components start apart; unit scales.
        self.means = nn.Parameter(torch.randn(components, latent))
        self.log_scales = nn.Parameter(torch.zeros(components, latent))
        self.logits = nn.Parameter(torch.zeros(components))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) for (..., L) points: (...).

        The squared distances to every component as three products, sum z^2/s^2 - 2 z.m/s^2 +
        sum m^2/s^2, instead of a (..., K, L) difference tensor (on Adult's latent of 128 and 64
        components that tensor made a step several times slower). In float64: the three terms
        are large and nearly cancel for a z close to a narrow component."""
        log_scales = self.log_scales.clamp(-7.0, 5.0).double()
        w = torch.exp(-2.0 * log_scales)  # (K, L) inverse variances
        m = self.means.double()
        zd = z.double()
        sq = (zd * zd) @ w.T - 2.0 * zd @ (m * w).T + (m * m * w).sum(1)  # (..., K)
        per_comp = -0.5 * sq.clamp(min=0.0) - log_scales.sum(1) - 0.5 * z.shape[-1] * _LOG_2PI
        return torch.logsumexp(per_comp + torch.log_softmax(self.logits.double(), 0), dim=-1).to(z.dtype)


class _MixVAENet(_VAENet):
    """The TVAE's encoder, decoder and output scales, and the prior: one forward, so DDP syncs
    all of them."""

    logvar_range = (-12.0, 8.0)

    def __init__(self, data_dim: int, hidden: list[int], latent: int, n_cont: int, components: int):
        super().__init__(data_dim, hidden, latent, n_cont)
        self.prior = _MixturePrior(components, latent)

    def forward(self, x: torch.Tensor, eps: torch.Tensor, joint: bool):
        """(reconstruction logits, per-row KL term, per-row prior fit term).

        ``joint``: the KL term is the one-sample estimate log q(z|x) - log p(z) under the
        mixture, and the prior trains through it. Otherwise (ex post) the KL term is the closed
        form against N(0, I) as in the TVAE, and the mixture fits the posterior samples on its
        own: -log p(z) at the detached z, a gradient for the prior only.
        """
        z, mu, logvar = self.draw(x, eps)
        if joint:
            log_q = -0.5 * (eps * eps + logvar + _LOG_2PI).sum(1)  # N(z; mu, sigma^2) at z = mu + sigma * eps
            return self.decoder(z), log_q - self.prior.log_prob(z), z.new_zeros(())
        kl = gaussian_kl(mu, logvar)
        return self.decoder(z), kl, -self.prior.log_prob(z[:_PRIOR_FIT_ROWS].detach())


class MixturePriorVAE(TabularVAE):
    def __init__(self, cfg, spans, data_dim):
        super().__init__(cfg, spans, data_dim)
        # The TVAE's net is replaced (built first by the parent, for its index buffers).
        self.net = _MixVAENet(data_dim, list(cfg.hidden_dims), cfg.latent_dim, len(self.cont_idx),
                              cfg.prior_components)
        object.__setattr__(self, "_run", self.net)

    def configure_optimizers(self, lr: float, weight_decay: float) -> None:
        prior = set(self.net.prior.parameters())
        rest = [p for p in self.net.parameters() if p not in prior]
        # The prior at a higher rate: its means must travel to wherever the encoder puts the
        # data within the run, while the encoder keeps moving.
        groups = [{"params": rest}, {"params": list(self.net.prior.parameters()), "lr": lr * _PRIOR_LR_SCALE,
                                     "weight_decay": 0.0}]
        self.optimizers = {"vae": torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay,
                                                   fused=True if rest[0].is_cuda else None)}

    def train_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        opt = self.optimizers["vae"]
        opt.zero_grad(set_to_none=True)
        eps = torch.randn(batch.shape[0], self.cfg.latent_dim, device=batch.device)
        recon, kl, prior_nll = self._run(batch, eps, self.cfg.prior_training == "joint")
        nll = self._nll_per_row(batch, recon.float()).mean()
        kl = kl.float().mean()
        prior_nll = prior_nll.float().mean()
        loss = self.cfg.loss_factor * nll + kl
        (loss + prior_nll).backward()  # disjoint parameters: the prior term moves the prior only
        opt.step()
        return {"loss": loss.detach(), "recon_nll": nll.detach(), "kl": kl.detach(), "prior_nll": prior_nll.detach()}

    def _prior_draw(self, generator: torch.Generator | None, device) -> callable:
        """A function rows -> (rows, L) latent draws from the mixture prior, for forward_numpy:
        per row one uniform (the component, by inverse CDF) and L normals."""
        prior = self.net.prior
        cdf = torch.cumsum(torch.softmax(prior.logits.detach().double(), 0), 0).float()
        cdf[-1] = 1.0
        means = prior.means.detach()
        scales = torch.exp(prior.log_scales.detach().clamp(-7.0, 5.0))

        def draw(rows: int) -> torch.Tensor:
            u = torch.rand(rows, generator=generator, device=device)
            k = torch.searchsorted(cdf, u, right=True).clamp_(max=len(cdf) - 1)
            eps = torch.randn(rows, means.shape[1], generator=generator, device=device)
            return torch.addcmul(means.index_select(0, k), scales.index_select(0, k), eps)
        return draw

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per row in nats (higher = more anomalous): the reconstruction term at
        the posterior mean plus KL(q(z|x) || p(z)) estimated with the same fixed 16 latent draws
        for every row, so a row's score depends on that row only and never on a seed."""
        mu, logvar = self.net.encode(x)
        nll = self._nll_per_row(x, self.net.decoder(mu))
        eps = torch.randn(_SCORE_DRAWS, 1, mu.shape[1], generator=torch.Generator().manual_seed(_SCORE_SEED))
        eps = eps.to(x.device)
        z = mu + torch.exp(0.5 * logvar) * eps  # (S, B, L)
        log_q = -0.5 * (eps * eps + logvar + _LOG_2PI).sum(-1)
        kl = (log_q - self.net.prior.log_prob(z)).mean(0)
        return nll + kl

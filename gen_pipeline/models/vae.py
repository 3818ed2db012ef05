"""TVAE-style VAE for tables (Kingma & Welling 2014; Xu et al. 2019, "Modeling Tabular Data using
Conditional GAN", section 4): per-column likelihoods -- a Gaussian with a learned scale for each
continuous value, a categorical cross-entropy for each one-hot span -- plus KL to N(0, I).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gen_pipeline.models.base import GenerativeModel, adam, forward_numpy, gaussian_kl, mlp

_LOG_2PI = math.log(2 * math.pi)


class _GaussianEncoder(nn.Module):
    """x -> the mean and log-variance of a diagonal Gaussian q(z | x), and a draw from it by the
    reparameterisation trick: the part every tabular VAE's network shares (its parameter names,
    ``encoder``, ``to_mu`` and ``to_logvar``, are those of the saved state dicts)."""

    logvar_range: tuple[float, float] | None = None  # a clamp on the log-variance, where set

    def __init__(self, data_dim: int, hidden: list[int], latent: int):
        super().__init__()
        self.encoder = mlp([data_dim, *hidden])
        self.to_mu = nn.Linear(hidden[-1], latent)
        self.to_logvar = nn.Linear(hidden[-1], latent)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        logvar = self.to_logvar(h)
        if self.logvar_range is not None:
            logvar = logvar.clamp(*self.logvar_range)
        return self.to_mu(h), logvar

    def draw(self, x: torch.Tensor, eps: torch.Tensor):
        """(z, mu, logvar) with z = mu + sigma * eps, each (B, L)."""
        mu, logvar = self.encode(x)
        return mu + torch.exp(0.5 * logvar) * eps, mu, logvar


class _VAENet(_GaussianEncoder):
    """Encoder + decoder + learned output scales: one forward, so DDP syncs all of it."""

    def __init__(self, data_dim: int, hidden: list[int], latent: int, n_cont: int):
        super().__init__(data_dim, hidden, latent)
        self.decoder = mlp([latent, *reversed(hidden), data_dim], last_act=False)
        self.log_sigma = nn.Parameter(torch.full((n_cont,), math.log(0.1)))

    def forward(self, x: torch.Tensor, eps: torch.Tensor):
        z, mu, logvar = self.draw(x, eps)
        return self.decoder(z), mu, logvar


class TabularVAE(GenerativeModel):
    def __init__(self, cfg, spans, data_dim):
        super().__init__(cfg, spans, data_dim)
        self.cont_idx = [s.start for s in spans if s.kind == "continuous"]
        # VGM offsets live in [-1, 1]: the decoder's mean for them goes through tanh (as TVAE's).
        self.bounded_idx = [s.start for s in spans if s.kind == "continuous" and s.bounded]
        self.cat_spans = [s for s in spans if s.kind == "categorical"]
        self.net = _VAENet(data_dim, list(cfg.hidden_dims), cfg.latent_dim, len(self.cont_idx))
        object.__setattr__(self, "_run", self.net)  # the DDP-wrapped view, not part of state_dict
        # Column indices as device buffers (they follow .to(device); not in the state dict), so a
        # step never copies a Python list to the GPU. Categorical spans as one (D, S) membership
        # matrix and a padded (S, K) grid: one pass over all spans instead of one per span.
        k = max((s.end - s.start for s in self.cat_spans), default=0)
        member = torch.zeros(data_dim, len(self.cat_spans))
        grid = torch.zeros(len(self.cat_spans), k, dtype=torch.long)
        pad = torch.ones(len(self.cat_spans), k, dtype=torch.bool)
        for i, s in enumerate(self.cat_spans):
            member[s.start:s.end, i] = 1.0
            grid[i, :s.end - s.start] = torch.arange(s.start, s.end)
            pad[i, :s.end - s.start] = False
        for name, value in (("_cont", torch.tensor(self.cont_idx, dtype=torch.long)),
                            ("_bounded", torch.tensor(self.bounded_idx, dtype=torch.long)),
                            ("_cat_member", member), ("_cat_cols", member.sum(1) > 0),
                            ("_cat_grid", grid), ("_cat_pad", pad)):
            self.register_buffer(name, value, persistent=False)

    def configure_optimizers(self, lr: float, weight_decay: float) -> None:
        self.optimizers = {"vae": adam(self.net.parameters(), lr=lr, weight_decay=weight_decay)}

    def distribute(self, wrap) -> None:
        object.__setattr__(self, "_run", wrap(self.net))

    def _sigma(self) -> torch.Tensor:
        return torch.exp(self.net.log_sigma).clamp(0.01, 1.0)  # TVAE clamps its scales the same way

    def _squash(self, recon: torch.Tensor) -> torch.Tensor:
        if not self.bounded_idx:
            return recon
        return recon.index_copy(1, self._bounded, torch.tanh(recon[:, self._bounded]))

    def _nll_per_row(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of x under the decoder's output, in nats, per row: (B,).

        Continuous columns: Gaussian with the learned scales. Categorical spans: the
        cross-entropy of each span's softmax against its one-hot category (the encoding always
        sets exactly one): ``_categorical_nll``.
        """
        recon = self._squash(recon)
        nll = torch.zeros(x.shape[0], device=x.device, dtype=recon.dtype)
        if self.cont_idx:
            sigma = self._sigma()
            diff = x[:, self._cont] - recon[:, self._cont]
            nll = nll + (0.5 * (diff / sigma) ** 2 + torch.log(sigma) + 0.5 * _LOG_2PI).sum(1)
        if self.cat_spans:
            nll = nll + self._categorical_nll(x, recon)
        return nll

    def _categorical_nll(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """The categorical spans' cross-entropies summed per row, for all spans at once: per
        span, logsumexp of its logits (shifted by the span's max, a constant for the gradient)
        minus the logit of the true category. Other columns of ``recon`` are ignored."""
        with torch.no_grad():
            top = recon[:, self._cat_grid].masked_fill(self._cat_pad, float("-inf")).amax(2)  # (B, S)
            shift = top @ self._cat_member.T  # (B, D): each column gets its span's max
        e = (recon - shift).masked_fill(~self._cat_cols, float("-inf")).exp()
        logsumexp = torch.log(e @ self._cat_member) + top  # (B, S)
        chosen = (recon * x).masked_fill(~self._cat_cols, 0.0).sum(1)
        return logsumexp.sum(1) - chosen

    def train_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        opt = self.optimizers["vae"]
        opt.zero_grad(set_to_none=True)
        eps = torch.randn(batch.shape[0], self.cfg.latent_dim, device=batch.device)
        recon, mu, logvar = self._run(batch, eps)
        nll = self._nll_per_row(batch, recon.float()).mean()
        kl = gaussian_kl(mu.float(), logvar.float()).mean()
        loss = self.cfg.loss_factor * nll + kl
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), "recon_nll": nll.detach(), "kl": kl.detach()}

    def _prior_draw(self, generator: torch.Generator | None, device):
        """A function rows -> (rows, L) draws from the prior, N(0, I), for ``forward_numpy``."""
        return lambda rows: torch.randn(rows, self.cfg.latent_dim, generator=generator, device=device)

    @torch.no_grad()
    def sample_raw(self, n: int, generator: torch.Generator | None = None,
                   fixed: dict[int, int] | None = None) -> torch.Tensor:
        device = self.net.log_sigma.device
        out = forward_numpy(self.net.decoder, n=n, x=self._prior_draw(generator, device))  # a block at a time
        if self.bounded_idx:  # in place: no copy of the whole (N, D) output as in training's _squash
            out[:, self._bounded] = torch.tanh(out[:, self._bounded])
        if self.cont_idx:
            noise = torch.randn(n, len(self.cont_idx), generator=generator, device=device)
            out[:, self._cont] = out[:, self._cont] + noise * self._sigma()
        return out

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per row in nats (higher = more anomalous), decoding the posterior mean."""
        mu, logvar = self.net.encode(x)
        recon = self.net.decoder(mu)
        return self._nll_per_row(x, recon) + gaussian_kl(mu, logvar)

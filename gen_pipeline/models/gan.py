"""Conditional GAN for tables, CTGAN-style (Xu et al. 2019, "Modeling Tabular Data using
Conditional GAN"), written from the paper:

- a residual MLP generator whose outputs are activated per span: tanh for mode-specific offsets,
  Gumbel-softmax (Jang et al. 2017) for categorical columns and modes;
- a PacGAN discriminator (Lin et al. 2018) that judges ``pac`` rows at once, with their
  conditions;
- the conditional vector with training-by-sampling (section 4.3): each generated row is
  conditioned on one categorical column taking one value, the value drawn with log-frequency
  weights so rare categories are learned; the discriminator sees a real row with that value; the
  generator also pays a cross-entropy for not producing the value it was asked for;
- two objectives: the classic binary cross-entropy game with the non-saturating generator loss
  (Goodfellow et al. 2014), or WGAN-GP (Gulrajani et al. 2017);
- ``ema_decay``: an exponential moving average of the generator's weights (Yazici et al. 2019),
  updated after every generator step and kept in the state dict (``generator_ema``), so
  checkpoints and the registered model carry it; sampling uses it when ``ema_decay`` > 0. A GAN's
  generator keeps moving around the equilibrium; the average sits nearer it.

The real row for a condition is drawn from the current batch, not from the whole table as in
CTGAN: the trainer streams shards and never holds the table. A category absent from a batch is
not asked for in that batch; the log-frequency weights still lift rare ones whenever present.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from gen_pipeline.models.base import GenerativeModel, adam, update_ema


class _Residual(nn.Module):
    """h -> h (+) ReLU(BN(FC(h))): the generator block of the CTGAN paper (concatenating)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.fc, self.bn = nn.Linear(dim_in, dim_out), nn.BatchNorm1d(dim_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(self.bn(self.fc(h))), h], dim=1)


class _Generator(nn.Module):
    def __init__(self, dim_in: int, hidden: list[int], data_dim: int):
        super().__init__()
        blocks, dim = [], dim_in
        for h in hidden:
            blocks.append(_Residual(dim, h))
            dim += h
        self.net = nn.Sequential(*blocks, nn.Linear(dim, data_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, D): raw continuous values and categorical logits


class _Discriminator(nn.Module):
    def __init__(self, dim_in: int, hidden: list[int], pac: int):
        super().__init__()
        self.pac = pac
        layers: list[nn.Module] = []
        dim = dim_in * pac
        for h in hidden:
            layers += [nn.Linear(dim, h), nn.LeakyReLU(0.2), nn.Dropout(0.5)]
            dim = h
        layers.append(nn.Linear(dim, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, x.shape[1] * self.pac)).squeeze(1)  # (B / pac,) scores


class TabularGAN(GenerativeModel):
    def __init__(self, cfg, spans, data_dim):
        super().__init__(cfg, spans, data_dim)
        # The conditional vector: one block per categorical COLUMN (not modes or null flags).
        self.cond_spans = [s for s in spans if s.cond] if cfg.conditional else []
        self.conditional = bool(self.cond_spans)
        self.cond_offsets = [0]
        for s in self.cond_spans:
            self.cond_offsets.append(self.cond_offsets[-1] + s.end - s.start)
        self.cond_dim = self.cond_offsets[-1]
        self.generator = _Generator(cfg.latent_dim + self.cond_dim, list(cfg.hidden_dims), data_dim)
        self.discriminator = _Discriminator(data_dim + self.cond_dim, list(cfg.discriminator_dims), cfg.pac)
        if cfg.ema_decay > 0:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
            self.register_buffer("ema_steps", torch.zeros(()))  # in the state dict: the warm-up resumes
        object.__setattr__(self, "_g", self.generator)
        object.__setattr__(self, "_d", self.discriminator)

    def configure_optimizers(self, lr: float, weight_decay: float) -> None:
        betas = (0.5, 0.9)  # as in the CTGAN and WGAN-GP papers
        self.optimizers = {
            "generator": adam(self.generator.parameters(), lr=lr, betas=betas, weight_decay=weight_decay),
            "discriminator": adam(self.discriminator.parameters(), lr=lr, betas=betas, weight_decay=weight_decay),
        }

    def distribute(self, wrap) -> None:
        object.__setattr__(self, "_g", wrap(self.generator))
        object.__setattr__(self, "_d", wrap(self.discriminator))

    # ---- pieces ---------------------------------------------------------------------------
    def _activate(self, raw: torch.Tensor) -> torch.Tensor:
        """Differentiable outputs: tanh for bounded offsets, Gumbel-softmax per categorical span."""
        parts = []
        for s in self.spans:
            chunk = raw[:, s.start:s.end]
            if s.kind == "categorical":
                chunk = F.gumbel_softmax(chunk, tau=self.cfg.gumbel_tau)
            elif s.bounded:
                chunk = torch.tanh(chunk)
            parts.append(chunk)
        return torch.cat(parts, dim=1)

    def _sample_conditions(self, real: torch.Tensor, generator: torch.Generator | None = None):
        """Training-by-sampling within the batch.

        Returns (cond (B, C), column index per row (B,), category per row (B,), real row per
        row (B,)): each row asks one categorical column for one value, drawn with weights
        log(1 + count in batch), and the real row shown beside it has that value.
        """
        n, device = real.shape[0], real.device
        cond = torch.zeros(n, self.cond_dim, device=device)
        column = torch.randint(len(self.cond_spans), (n,), generator=generator, device=device)
        category = torch.zeros(n, dtype=torch.long, device=device)
        pick = torch.arange(n, device=device)
        for j, s in enumerate(self.cond_spans):
            rows = (column == j).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            onehot = real[:, s.start:s.end]  # (B, K)
            weights = torch.log1p(onehot.sum(0))  # absent categories get weight 0
            k = torch.multinomial(weights, rows.numel(), replacement=True, generator=generator)
            # A real row with category k, uniformly among those that have it.
            src = torch.multinomial(onehot[:, k].T.float(), 1, generator=generator).squeeze(1)
            category[rows], pick[rows] = k, src
            cond[rows, self.cond_offsets[j] + k] = 1.0
        return cond, column, category, pick

    def _condition_loss(self, raw: torch.Tensor, column: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each generated row's asked-for column against the asked-for value."""
        loss = raw.new_zeros(())
        for j, s in enumerate(self.cond_spans):
            rows = column == j
            if rows.any():
                loss = loss + F.cross_entropy(raw[rows, s.start:s.end], category[rows], reduction="sum")
        return loss / raw.shape[0]

    def _gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor):
        """Interpolates packed real and fake rows; one weight per pack (WGAN-GP, eq. 3)."""
        pac = self.cfg.pac
        a = torch.rand(real.shape[0] // pac, 1, 1, device=real.device).expand(-1, pac, 1).reshape(-1, 1)
        return (a * real + (1 - a) * fake).requires_grad_(True)

    # ---- training ------------------------------------------------------------------------
    def train_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        n = batch.shape[0] - batch.shape[0] % self.cfg.pac
        real = batch[:n]
        opt_d, opt_g = self.optimizers["discriminator"], self.optimizers["generator"]
        wgan = self.cfg.objective == "wgan_gp"

        # Discriminator: real rows and an equal number of generated rows, with their conditions,
        # in one forward (one DDP sync); for WGAN-GP the interpolates ride along.
        if self.cond_dim:
            cond, column, category, pick = self._sample_conditions(real)
            real = real[pick]
        else:
            cond = real.new_zeros(n, 0)
        z = torch.randn(n, self.cfg.latent_dim, device=batch.device)
        with torch.no_grad():
            fake = self._activate(self._g(torch.cat([z, cond], 1)))
        real_c, fake_c = torch.cat([real, cond], 1), torch.cat([fake, cond], 1)
        parts = [real_c, fake_c]
        if wgan:
            parts.append(self._gradient_penalty(real_c, fake_c))
        scores = self._d(torch.cat(parts)).float()
        m = n // self.cfg.pac
        s_real, s_fake = scores[:m], scores[m:2 * m]
        if wgan:
            grad, = torch.autograd.grad(scores[2 * m:].sum(), parts[2], create_graph=True)
            gp = ((grad.reshape(m, -1).norm(2, dim=1) - 1) ** 2).mean()
            loss_d = s_fake.mean() - s_real.mean() + self.cfg.gp_weight * gp
        else:
            labels = torch.cat([torch.ones(m, device=batch.device), torch.zeros(m, device=batch.device)])
            loss_d = F.binary_cross_entropy_with_logits(scores[:2 * m], labels)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        # Generator: make the discriminator call its rows real, and honour the conditions.
        if self.cond_dim:
            cond, column, category, _ = self._sample_conditions(batch[:n])
        z = torch.randn(n, self.cfg.latent_dim, device=batch.device)
        raw = self._g(torch.cat([z, cond], 1))
        s_gen = self.discriminator(torch.cat([self._activate(raw), cond], 1)).float()
        if wgan:
            loss_adv = -s_gen.mean()
        else:  # non-saturating: maximise log D(G(z))
            loss_adv = F.binary_cross_entropy_with_logits(s_gen, torch.ones_like(s_gen))
        loss_cond = self._condition_loss(raw.float(), column, category) if self.cond_dim else raw.new_zeros(())
        loss_g = loss_adv + loss_cond
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if self.cfg.ema_decay > 0:
            update_ema(self.generator_ema, self.generator, self.ema_steps, self.cfg.ema_decay)

        out = {"loss_d": loss_d.detach(), "loss_g": loss_adv.detach(), "loss_cond": loss_cond.detach()}
        with torch.no_grad():
            if wgan:  # the critic's estimate of the Wasserstein distance: should shrink
                out["w_distance"] = s_real.mean() - s_fake.mean()
            else:
                out["d_real"] = torch.sigmoid(s_real).mean()
                out["d_fake"] = torch.sigmoid(s_fake).mean()
        return out

    # ---- inference -----------------------------------------------------------------------
    def _inference_conditions(self, n: int, generator, fixed: dict[int, int] | None) -> torch.Tensor:
        """Conditions at sampling time: a fixed value when asked for one (the first fixed column
        the vector covers), else CTGAN's draw of a random column and a value at its real
        frequency, which leaves the joint distribution as trained."""
        device = next(self.generator.parameters()).device
        cond = torch.zeros(n, self.cond_dim, device=device)
        for j, s in enumerate(self.cond_spans):
            if fixed and s.start in fixed:  # one index, or one per row
                k = torch.as_tensor(fixed[s.start], device=device).expand(n)
                cond[torch.arange(n, device=device), self.cond_offsets[j] + k] = 1.0
                return cond
        column = torch.randint(len(self.cond_spans), (n,), generator=generator, device=device)
        for j, s in enumerate(self.cond_spans):
            rows = (column == j).nonzero().squeeze(1)
            freqs = torch.tensor(s.freqs, device=device, dtype=torch.float32)
            k = torch.multinomial(freqs, max(rows.numel(), 1), replacement=True, generator=generator)
            cond[rows, self.cond_offsets[j] + k[:rows.numel()]] = 1.0
        return cond

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """A state dict saved without the moving average (trained with ``ema_decay: 0`` or before
        the GAN kept one) loads into a model that has one: the average starts as the weights."""
        if self.cfg.ema_decay > 0 and not any(k.startswith("generator_ema.") for k in state_dict):
            state_dict = dict(state_dict)
            state_dict.update({"generator_ema." + k[len("generator."):]: v for k, v in list(state_dict.items())
                               if k.startswith("generator.")})
            state_dict.setdefault("ema_steps", torch.zeros(()))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @property
    def sampler(self) -> nn.Module:
        """The generator that samples: its moving average when ``ema_decay`` > 0."""
        return self.generator_ema if self.cfg.ema_decay > 0 else self.generator

    @torch.no_grad()
    def sample_raw(self, n: int, generator: torch.Generator | None = None,
                   fixed: dict[int, int] | None = None) -> torch.Tensor:
        net = self.sampler
        was_training = net.training
        net.eval()
        device = next(net.parameters()).device
        z = torch.randn(n, self.cfg.latent_dim, generator=generator, device=device)
        cond = self._inference_conditions(n, generator, fixed) if self.cond_dim else z.new_zeros(n, 0)
        raw = net(torch.cat([z, cond], 1))
        for s in self.spans:
            if s.bounded:
                raw[:, s.start:s.end] = torch.tanh(raw[:, s.start:s.end])
        net.train(was_training)
        return raw

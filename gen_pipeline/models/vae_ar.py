"""A VAE whose decoder is autoregressive over the table's columns (family ``tvae_ar``).

The TVAE (``vae.TabularVAE``) decodes every column independently given the latent z, so any
relation between columns must pass through z; on Adult its decoder makes "Husband" rows for
women even from real rows' posterior means. Here the decoder is a masked network (MADE, Germain
et al. 2015) that gives each encoded span its distribution given z and the spans before it:

    p(x | z) = prod_j p(x_j | z, x_<j),

so a column can depend on the columns before it directly. The encoder, the Gaussian posterior,
KL to N(0, I) and the ELBO are the VAE's (Kingma & Welling 2014); a decoder that conditions the
output's parts on each other is the autoregressive decoder of the PixelVAE (Gulrajani et al.
2017), with per-column likelihoods as the TVAE's (Xu et al. 2019): a softmax per categorical
span, and a Gaussian per continuous value whose scale is predicted per row (the TVAE learns one
scale per column).

Order: a column's spans are consecutive, its categorical spans (a VGM mode, a null flag) before
its value, so a value is drawn knowing its mode. Masks: z has degree 0, the spans degrees 1..S in
that order; hidden units get degrees 0..S-1 in turn and see inputs of degree <= theirs; span j's
outputs see hidden units of degree < j. Direct connections (MADE's) add a linear term from every
earlier span to each output, learning at 10x the rate. A training step is one masked forward
with the real row as the decoder's input (teacher forcing), about as cheap as the TVAE's.
Sampling and scoring use an exponential moving average of the weights (``model.ema_decay``).

Sampling runs the spans in order. A hidden unit of degree d depends only on spans 1..d, so it is
computed once per row, when span d has been drawn: a row costs one forward of the network in S
slices, not S forwards (``_SamplingPlan``). ``fixed`` conditions are not produced directly (the
bundle keeps the draws that match). Measurements: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gen_pipeline.models.base import gaussian_kl, update_ema
from gen_pipeline.models.vae import TabularVAE, _GaussianEncoder

_LOG_2PI = math.log(2 * math.pi)
_LOG_SIGMA = (math.log(0.005), math.log(2.0))  # per-row scales of a continuous value, clamped
_DRAWN = 1e4  # a drawn category's logit margin: draw_categories then picks it with certainty
# The direct connections learn at this multiple of the learning rate: a deterministic dependence
# (no woman is a husband) needs logits near -9, which Adam at the base rate reaches only after
# thousands of steps. On 3,000 Adult rows and 240 steps: female husbands 13% at 1x, 3.3% at 3x,
# 0.7% at 10x with the best held-out negative ELBO, 0.05% at 30x with a worse one.
_DIRECT_LR_SCALE = 10.0


def span_order(spans) -> list[int]:
    """Indices of ``spans`` in the decoder's order: column by column as encoded, each column's
    categorical spans (mode, null flag) before its continuous value. A column starts at a
    continuous span or a categorical column's span (``cond``); other categorical spans belong
    to the column before them."""
    columns: list[list[int]] = []
    for i, s in enumerate(spans):
        if s.kind == "continuous" or s.cond or not columns:
            columns.append([i])
        else:
            columns[-1].append(i)
    return [i for col in columns for i in sorted(col, key=lambda i: spans[i].kind == "continuous")]


class _MaskedLinear(nn.Linear):
    def __init__(self, mask: torch.Tensor):
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float(), persistent=False)  # rebuilt from the spans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class _ARDecoder(nn.Module):
    """Masked MLP from [z, x] to every span's output: categorical logits in the encoded layout,
    a continuous value's mean at its position and its log-scale after the D encoded columns."""

    def __init__(self, spans, data_dim: int, latent: int, hidden: list[int]):
        super().__init__()
        order = span_order(spans)
        rank = torch.zeros(len(spans), dtype=torch.long)
        rank[torch.tensor(order)] = torch.arange(1, len(spans) + 1)
        in_deg = torch.zeros(latent + data_dim, dtype=torch.long)
        cont = [i for i, s in enumerate(spans) if s.kind == "continuous"]
        out_deg = torch.zeros(data_dim + len(cont), dtype=torch.long)
        for i, s in enumerate(spans):
            in_deg[latent + s.start:latent + s.end] = rank[i]
            out_deg[s.start:s.end] = rank[i]
        for j, i in enumerate(cont):
            out_deg[data_dim + j] = rank[i]
        degs = [in_deg] + [torch.arange(h) % max(len(spans), 1) for h in hidden]
        self.hidden_degrees = degs[1:]
        self.layers = nn.ModuleList(_MaskedLinear(degs[k + 1][:, None] >= degs[k][None, :]) for k in range(len(hidden)))
        self.out = _MaskedLinear(out_deg[:, None] > degs[-1][None, :])
        # MADE's direct connections: a linear term from every earlier span (and z) to each
        # output, so a plain dependence (a relationship of "Husband" -> sex) needs no hidden unit.
        self.direct = _MaskedLinear(out_deg[:, None] > in_deg[None, :])
        self.order = order

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = inp = torch.cat([z, x], 1)
        for layer in self.layers:
            h = F.relu(layer(h))
        return self.out(h) + self.direct(inp)


class _ARVAENet(_GaussianEncoder):
    """The TVAE's encoder and the masked decoder: one forward, so DDP syncs all of it."""

    logvar_range = (-12.0, 8.0)

    def __init__(self, spans, data_dim: int, hidden: list[int], latent: int, decoder_hidden: list[int]):
        super().__init__(data_dim, hidden, latent)
        self.decoder = _ARDecoder(spans, data_dim, latent, decoder_hidden)

    def forward(self, x: torch.Tensor, eps: torch.Tensor):
        z, mu, logvar = self.draw(x, eps)
        return self.decoder(z, x), mu, logvar


class AutoregressiveVAE(TabularVAE):
    def __init__(self, cfg, spans, data_dim):
        super().__init__(cfg, spans, data_dim)  # the TVAE's index buffers; its net is replaced
        self.net = _ARVAENet(self.spans, data_dim, list(cfg.hidden_dims), cfg.latent_dim,
                             list(cfg.decoder_hidden_dims))
        object.__setattr__(self, "_run", self.net)
        if cfg.ema_decay > 0:  # sampled and scored: the weights' moving average (in the state dict)
            self.net_ema = copy.deepcopy(self.net).requires_grad_(False)
            self.register_buffer("ema_steps", torch.zeros(()))

    def _final(self) -> _ARVAENet:
        """The network that samples and scores: the moving average of the weights when
        ``ema_decay`` > 0. The step-to-step loss swings on Adult (continuous scales near their
        floor make a batch's likelihood jumpy), so the last step's weights are a noisy pick."""
        return self.net_ema if self.cfg.ema_decay > 0 else self.net

    def train_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        metrics = super().train_step(batch)
        if self.cfg.ema_decay > 0:
            update_ema(self.net_ema, self.net, self.ema_steps, self.cfg.ema_decay)
        return metrics

    def configure_optimizers(self, lr: float, weight_decay: float) -> None:
        direct = set(self.net.decoder.direct.parameters())
        rest = [p for p in self.net.parameters() if p not in direct]
        groups = [{"params": rest}, {"params": list(direct), "lr": lr * _DIRECT_LR_SCALE}]
        self.optimizers = {"vae": torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay,
                                                   fused=True if rest[0].is_cuda else None)}

    def _nll_per_row(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood per row (nats): the TVAE's per-span terms, with each
        continuous value's Gaussian scale taken from the decoder's output for that row."""
        d = self.data_dim
        recon = self._squash(out[:, :d])
        nll = torch.zeros(x.shape[0], device=x.device, dtype=recon.dtype)
        if self.cont_idx:
            log_sigma = out[:, d:].clamp(*_LOG_SIGMA)
            diff = (x[:, self._cont] - recon[:, self._cont]) * torch.exp(-log_sigma)
            nll = nll + (0.5 * diff ** 2 + log_sigma + 0.5 * _LOG_2PI).sum(1)
        if self.cat_spans:
            nll = nll + self._categorical_nll(x, recon)
        return nll

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per row in nats (higher = more anomalous), decoding the posterior mean."""
        net = self._final()
        mu, logvar = net.encode(x)
        return self._nll_per_row(x, net.decoder(mu, x)) + gaussian_kl(mu, logvar)

    @torch.no_grad()
    def sample_drawn(self, n: int, generator: torch.Generator | None = None,
                     fixed: dict[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows drawn span by span (see the module's docstring), in numpy on the CPU, a block of
        rows at a time: continuous values in the (N, D) output and every category as a code.

        On one thread (torch's and BLAS's, restored after): the operations are on 512-row
        blocks, too small to split, and where a thread waits for another one that the machine
        has descheduled every step stalls (two threads beside other jobs: 0.12x one thread)."""
        from threadpoolctl import threadpool_limits

        plan = _SamplingPlan(self._final().decoder, self.spans, self.data_dim, self.cfg.latent_dim)
        out = np.zeros((self.data_dim, n), dtype=np.float32)  # column-major, as forward_numpy's
        codes = np.empty((n, plan.n_codes), dtype=np.int64)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with threadpool_limits(1):
                for start in range(0, n, plan.block):
                    rows = min(plan.block, n - start)
                    z = torch.randn(rows, self.cfg.latent_dim, generator=generator).numpy()
                    u = torch.rand(plan.n_spans, rows, generator=generator).numpy()
                    noise = torch.randn(plan.n_spans, rows, generator=generator).numpy()
                    plan.draw(z, u, noise, out[:, start:start + rows], codes[start:start + rows])
        finally:
            torch.set_num_threads(threads)
        return torch.from_numpy(out).T, torch.from_numpy(codes)

    @torch.no_grad()
    def sample_raw(self, n: int, generator: torch.Generator | None = None,
                   fixed: dict[int, int] | None = None) -> torch.Tensor:
        """``sample_drawn``'s rows with each categorical span as logits that put every
        probability on the drawn category."""
        x, codes = self.sample_drawn(n, generator, fixed)
        every = torch.arange(n)
        for i, s in enumerate(s for s in self.spans if s.kind == "categorical"):
            x[:, s.start:s.end] = -_DRAWN
            x[every, s.start + codes[:, i]] = 0.0
        return x


class _SamplingPlan:
    """The decoder's masked weights as numpy arrays, arranged for the span-by-span draw.

    The first layer and the direct connections are linear in the input, whose spans are one-hot
    (or one value): their pre-activations are kept as running sums over (z and) the spans drawn
    so far, and a drawn category adds one row of weights, a gather instead of a product over
    the whole input. Masks make a unit's sum final once the spans of its degree are in, so the
    sums are laid out in the step that reads them (step r: the first layer's units of degree r,
    then the direct terms of the span of rank r + 1) and a draw adds to one contiguous suffix.
    The deeper layers' units are sorted by degree, so a step reads a prefix of the layer below.
    """

    block = 512  # rows: the running sums of a block stay in cache (4,096 rows ran 1.8x slower on Adult)

    def __init__(self, dec: _ARDecoder, spans, data_dim: int, latent: int):
        self.latent = latent
        self.n_spans = len(spans)
        cat_index = {i: c for c, i in enumerate(i for i, s in enumerate(spans) if s.kind == "categorical")}
        self.n_codes = len(cat_index)
        # Inputs: z, then the encoded columns in the decoder's span order.
        x_cols = np.concatenate([np.arange(spans[i].start, spans[i].end) for i in dec.order]) if spans else []
        in_start = latent + np.cumsum([0] + [spans[i].end - spans[i].start for i in dec.order])  # per rank
        perm_in = np.concatenate([np.arange(latent), latent + np.asarray(x_cols, dtype=np.int64)])

        def masked(layer, rows=slice(None), cols=slice(None)):
            return (layer.weight * layer.mask).detach().cpu().numpy()[rows][:, cols]

        deg0 = dec.hidden_degrees[0].numpy()
        perm = np.argsort(deg0, kind="stable")
        self.width0 = len(perm)
        self.ends = [np.searchsorted(deg0[perm], np.arange(self.n_spans + 1), side="left")]
        # Every output's rows, span by span in the decoder's order (a continuous span: its mean
        # and its log-scale).
        cont = [i for i, s in enumerate(spans) if s.kind == "continuous"]
        out_rows = [np.arange(spans[i].start, spans[i].end) if spans[i].kind != "continuous"
                    else np.array([spans[i].start, data_dim + cont.index(i)]) for i in dec.order]
        w0 = masked(dec.layers[0], perm, perm_in)
        b0 = dec.layers[0].bias.detach().cpu().numpy()[perm]
        wd = masked(dec.direct, cols=perm_in)
        bd = (dec.out.bias + dec.direct.bias).detach().cpu().numpy()
        # Running sums, step by step: units of degree r, then the direct terms of rank r + 1.
        ws, bs, self.steps = [], [], []
        col = 0
        for r, rows in enumerate(out_rows):
            units = slice(self.ends[0][r], self.ends[0][r + 1])
            ws += [w0[units], wd[rows]]
            bs += [b0[units], bd[rows]]
            n_units = units.stop - units.start
            self.steps.append((slice(col, col + n_units), slice(col + n_units, col + n_units + len(rows))))
            col += n_units + len(rows)
        self.acc_w = np.ascontiguousarray(np.concatenate(ws).T)  # (in, H0 + O)
        self.acc_b = np.concatenate(bs)
        self.weights = torch.from_numpy(self.acc_w)
        self.deep = []  # (weights, bias) of the layers after the first, rows and columns by degree
        for layer, deg in zip(dec.layers[1:], dec.hidden_degrees[1:]):
            deg = deg.numpy()
            nxt = np.argsort(deg, kind="stable")
            self.deep.append((np.ascontiguousarray(masked(layer, nxt, perm)), layer.bias.detach().cpu().numpy()[nxt]))
            self.ends.append(np.searchsorted(deg[nxt], np.arange(self.n_spans + 1), side="left"))
            perm = nxt
        wo = masked(dec.out, cols=perm)
        # per rank: the span, its row in the input weights, its code column, the output weights
        self.outputs = [(spans[i], in_start[r], cat_index.get(i), np.ascontiguousarray(wo[rows].T))
                        for r, (i, rows) in enumerate(zip(dec.order, out_rows))]
        # Work arrays, reused block after block.
        self.acc = np.empty((self.block, self.acc_w.shape[1]), dtype=np.float32)
        self.hidden = [np.zeros((self.block, self.width0), dtype=np.float32)] + [
            np.zeros((self.block, w.shape[0]), dtype=np.float32) for w, _ in self.deep]

    def draw(self, z: np.ndarray, u: np.ndarray, noise: np.ndarray, out: np.ndarray, codes: np.ndarray) -> None:
        """One block of rows from (rows, L) latent draws and (S, rows) uniforms and normals, one
        per span and row: continuous values into ``out`` (D, rows), categories into ``codes``
        (rows, categorical spans)."""
        rows = z.shape[0]
        acc = self.acc[:rows]
        sums = torch.from_numpy(acc)  # the same memory, for the updates torch does faster
        np.matmul(z, self.acc_w[:self.latent], out=acc)
        acc += self.acc_b
        hidden = [h[:rows] for h in self.hidden]
        h0 = hidden[0]
        for r, (s, a, c, w_out) in enumerate(self.outputs):  # span of rank r + 1; units of degree r
            units, direct = self.steps[r]
            lo, hi = self.ends[0][r], self.ends[0][r + 1]
            np.maximum(acc[:, units], 0.0, out=h0[:, lo:hi])
            below, end = h0, hi
            for (w, b), ends, h in zip(self.deep, self.ends[1:], hidden[1:]):
                lo, hi = ends[r], ends[r + 1]
                if hi > lo:
                    block = below[:, :end] @ w[lo:hi, :end].T
                    block += b[lo:hi]
                    np.maximum(block, 0.0, out=h[:, lo:hi])
                below, end = h, hi
            o = below[:, :end] @ w_out[:end]
            o += acc[:, direct]
            later = direct.stop  # the sums that still change: one suffix
            if s.kind == "continuous":
                value = np.tanh(o[:, 0]) if s.bounded else o[:, 0]
                value += np.exp(np.clip(o[:, 1], *_LOG_SIGMA)) * noise[r]
                if later < acc.shape[1]:  # a rank-one update in place (numpy would build the outer product)
                    sums[:, later:].addr_(torch.from_numpy(value), self.weights[a, later:])
                out[s.start] = value
            else:
                o -= o.max(1, keepdims=True)
                np.exp(o, out=o)
                torch.from_numpy(o).cumsum_(1)  # along a row: torch's is 4x numpy's
                k = np.minimum((o < (u[r] * o[:, -1])[:, None]).sum(1), s.end - s.start - 1)
                if later < acc.shape[1]:
                    sums[:, later:].add_(self.weights[:, later:].index_select(0, torch.from_numpy(a + k)))
                codes[:, c] = k

"""The contract every generative model follows, and the name registry.

A model owns its networks, its optimisers and its ``train_step``; the training loop (written
once in ``gen_pipeline.training.loop``) owns epochs, devices, logging and checkpoints. Pure torch: no
Spark, Ray or MLflow in here.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from gen_pipeline.config import ModelConfig
from gen_pipeline.spans import Span

Wrap = Callable[[nn.Module], nn.Module]

def mlp(dims: list[int], act: Callable[[], nn.Module] = nn.ReLU, last_act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if last_act or i < len(dims) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per row, in nats: (B,). Kingma & Welling 2014,
    appendix B: -1/2 * sum(1 + log sigma^2 - mu^2 - sigma^2)."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)


def adam(params, **kwargs) -> torch.optim.Adam:
    """Adam over ``params``; on CUDA its fused kernel, one launch per step for all tensors
    (the default issues several per tensor, and small models' steps are launch-bound on a GPU)."""
    params = list(params)
    return torch.optim.Adam(params, fused=True if params and params[0].is_cuda else None, **kwargs)


@torch.no_grad()
def update_ema(ema: nn.Module, raw: nn.Module, steps: torch.Tensor, decay: float) -> None:
    """ema <- beta * ema + (1 - beta) * raw, beta = min(decay, (1 + t) / (10 + t)) at step t (an
    exponential moving average of weights, Yazici et al. 2019): early on the average follows the
    raw weights closely, so it is not dragged back to the random start. Floating buffers
    (BatchNorm's running statistics) are averaged the same way, others copied. Computed on the
    device (no host sync per step); ``steps`` is a 0-dim tensor, counted up here."""
    beta = torch.clamp((1 + steps) / (10 + steps), max=decay)
    for e, p in zip(ema.parameters(), raw.parameters()):
        e.lerp_(p, 1 - beta)
    for e, b in zip(ema.buffers(), raw.buffers()):
        if e.is_floating_point():
            e.lerp_(b, 1 - beta)
        else:
            e.copy_(b)
    steps.add_(1)


def forward_numpy(seq: nn.Sequential, x: torch.Tensor | Callable[[int], torch.Tensor], n: int | None = None,
                  block: int = 2048) -> torch.Tensor:
    """``seq(x)`` for a CPU stack of Linear and ReLU layers, computed with numpy's BLAS.

    ``x`` is the (N, in) input, or a function that returns the next ``rows`` rows of an ``n``-row
    input (sampling noise): it is called block by block, in order, so each block of noise is drawn
    just before it is used, still in cache (``torch.randn`` draws the same values a block at a
    time as in one call).

    For sampling (no gradients): the weights are numpy views of the parameters, never copies,
    so the result always follows the current weights. numpy's OpenBLAS runs these small
    products faster than torch's MKL on AMD processors; results agree to float32 rounding.
    Anything else (another layer type, a GPU tensor) runs through torch.

    ``block`` rows go through every layer at a time, so their activations stay in cache for
    the bias and ReLU passes and the next product. The result is column-major: the last
    product is computed as (out, in) @ (in, rows), so each output column is one contiguous run
    of N values, and ``draw_categories`` reads every categorical span as a (K, N) block in
    place, with no transposing copy. Measurements: benchmarks/RESULTS.md (generate).
    """
    linear = [i for i, m in enumerate(seq) if isinstance(m, nn.Linear)]
    if (not linear or seq[linear[0]].weight.device.type != "cpu"
            or linear[0] != 0  # (an in-place ReLU first would write to x)
            or not all(isinstance(m, (nn.Linear, nn.ReLU)) for m in seq)):
        return seq(x(n) if callable(x) else x)
    if not callable(x):
        blocks, n = iter(x.split(block)), x.shape[0]
        x = lambda rows: next(blocks)  # noqa: E731
    params = {i: (seq[i].weight.detach().numpy(), None if seq[i].bias is None else seq[i].bias.detach().numpy())
              for i in linear}
    out = np.empty((params[linear[-1]][0].shape[0], n), dtype=np.float32)  # (out, N)
    for start in range(0, n, block):
        h = x(min(block, n - start)).detach().float().numpy()
        for i, m in enumerate(seq):
            if i in params:
                w, b = params[i]
                if i == linear[-1]:  # (out, in) @ (in, rows): this block's columns of the result
                    h = w @ h.T
                    if b is not None:
                        h += b[:, None]
                else:
                    h = h @ w.T  # (rows, in) @ (in, out)
                    if b is not None:
                        h += b
            else:
                np.maximum(h, 0.0, out=h)
        out[:, start:start + block] = h
    return torch.from_numpy(out).T


def draw_categories(x: torch.Tensor, spans: list[Span], generator: torch.Generator | None,
                    offsets: dict[int, np.ndarray] | None = None) -> torch.Tensor:
    """One category per categorical span, drawn from the softmax of its logits: (N, S) int64.
    ``offsets``: {span start: (K,) log-weights added to that span's logits} (a table's fitted
    marginal calibration, ``TableTransformer.calibrated``).

    Inverse CDF with one uniform per span and row: the category is the number of cumulative
    probabilities below the uniform, an exact draw that never builds one-hot rows. Computed in
    numpy on the transposed logits, so every step runs over one contiguous row of N values
    instead of short strided spans; a column-major ``x`` is read in place, any other is
    transposed once.
    Sampling runs on the CPU (Spark tasks, evaluation).
    """
    cats = [s for s in spans if s.kind == "categorical"]
    n = x.shape[0]
    u = torch.rand(len(cats), n, generator=generator, dtype=torch.float32).numpy()
    columns = x.detach().cpu().float().numpy().T  # (D, N): a view of column-major x (forward_numpy's)
    if not columns.flags.c_contiguous:
        columns = np.ascontiguousarray(columns)
    codes = np.empty((n, len(cats)), dtype=np.int64)
    less = np.empty(n, dtype=bool)
    for i, s in enumerate(cats):
        k = s.end - s.start
        e = columns[s.start:s.end] - columns[s.start:s.end].max(axis=0)
        if offsets and s.start in offsets:
            e += offsets[s.start][:, None]
        np.exp(e, out=e)  # (K, N), unnormalised probabilities
        threshold = e.sum(axis=0)
        threshold *= u[i]
        below = e[0].copy()  # running cumulative sum
        count = np.zeros(n, dtype=np.uint8 if k < 256 else np.int64)  # a narrow counter: fewer bytes per add
        for j in range(1, k):  # the last cumulative sum is the total: never below the threshold
            np.less(below, threshold, out=less)
            count += less
            below += e[j]
        codes[:, i] = count
    return torch.from_numpy(codes)


def one_hot_spans(x: torch.Tensor, codes: torch.Tensor, spans: list[Span]) -> torch.Tensor:
    """``x`` with each categorical span replaced by the one-hot of its drawn code."""
    out = x.clone()
    for i, s in enumerate(s for s in spans if s.kind == "categorical"):
        out[:, s.start:s.end] = 0.0
        out[:, s.start:s.end].scatter_(1, codes[:, i:i + 1], 1.0)
    return out


class GenerativeModel(nn.Module):
    """Fit on encoded batches; ``sample_raw(n, generator, fixed)``; ``score(x)`` where the family's
    spec declares ``can_score``. What a family can do is declared in ``gen_pipeline.models``."""

    max_sample_chunk: int = 65_536  # rows per sampling forward: bounds activation memory
    conditional: bool = False  # this model (family and config) draws an asked category itself

    def __init__(self, cfg: ModelConfig, spans: list[Span], data_dim: int):
        super().__init__()
        self.cfg = cfg
        self.spans = list(spans)
        self.data_dim = data_dim
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    # -- training ---------------------------------------------------------------------------
    def configure_optimizers(self, lr: float, weight_decay: float) -> None:
        raise NotImplementedError

    def distribute(self, wrap: Wrap) -> None:
        """Wrap the networks that take gradient steps (DDP); the raw ones keep the state dict."""
        raise NotImplementedError

    def train_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimisation step; returns its metrics as detached 0-dim tensors, so a CUDA step
        queues its kernels without waiting for the GPU (``fit`` reads them once per epoch)."""
        raise NotImplementedError

    def optimizer_state(self) -> dict:
        return {k: o.state_dict() for k, o in self.optimizers.items()}

    def load_optimizer_state(self, state: dict) -> None:
        for k, o in self.optimizers.items():
            o.load_state_dict(state[k])

    # -- inference: one contract for every family -------------------------------------------
    @torch.no_grad()
    def sample_raw(self, n: int, generator: torch.Generator | None = None,
                   fixed: dict[int, int | torch.Tensor] | None = None) -> torch.Tensor:
        """``n`` rows of model output: continuous values and pixels drawn, categorical spans as
        LOGITS (``draw_categories`` draws them). ``fixed`` maps a categorical or label span's
        start to the category to produce (one index, or an (n,) tensor of indices): a
        ``conditional`` model produces it; any other ignores it, and the caller (``bundle``)
        keeps only the rows that match."""
        raise NotImplementedError

    @torch.no_grad()
    def sample_drawn(self, n: int, generator: torch.Generator | None = None,
                     fixed: dict[int, int | torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x, codes)``: ``sample_raw``'s rows and, from a family that draws its categories
        itself (an autoregressive decoder must, to condition later columns on them), their
        (n, categorical spans) codes in span order, as ``draw_categories`` returns them; the
        categorical spans of ``x`` are then unspecified. ``codes`` None: the caller draws them
        from ``x``'s logits, so a draw is made once."""
        return self.sample_raw(n, generator, fixed), None

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               fixed: dict[int, int | torch.Tensor] | None = None) -> torch.Tensor:
        """``n`` encoded rows, categorical spans one-hot (``sample_drawn``, then the draw)."""
        x, codes = self.sample_drawn(n, generator, fixed)
        return one_hot_spans(x, draw_categories(x, self.spans, generator) if codes is None else codes, self.spans)

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Per-row anomaly score (higher = more anomalous); families whose spec says ``can_score``."""
        raise NotImplementedError

    @torch.no_grad()
    def score_columns(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The score and any companion figures per row, as named columns of the score output."""
        return {"score": self.score(x)}

    @torch.no_grad()
    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A Monte-Carlo ELBO per row in nats (families whose spec says ``can_score``)."""
        raise NotImplementedError

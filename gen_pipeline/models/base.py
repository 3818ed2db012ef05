"""The contract every generative model follows, and the name registry.

A model owns its networks, its optimisers and its ``train_step``; the training loop (written
once in ``gen_pipeline.train``) owns epochs, devices, logging and checkpoints. Pure torch: no
Spark, Ray or MLflow in here.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from gen_pipeline.config import ModelConfig
from gen_pipeline.errors import PipelineError
from gen_pipeline.transforms import Span

Wrap = Callable[[nn.Module], nn.Module]

_REGISTRY: dict[str, type["GenerativeModel"]] = {}


def register(name: str):
    def deco(cls):
        _REGISTRY[name] = cls
        cls.family = name
        return cls
    return deco


def build_model(cfg: ModelConfig, spans: list[Span], data_dim: int) -> "GenerativeModel":
    if cfg.family not in _REGISTRY:
        raise PipelineError(f"model.family: unknown {cfg.family!r} (known: {sorted(_REGISTRY)})")
    return _REGISTRY[cfg.family](cfg, spans, data_dim)


def mlp(dims: list[int], act: Callable[[], nn.Module] = nn.ReLU, last_act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if last_act or i < len(dims) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def draw_categories(x: torch.Tensor, spans: list[Span], generator: torch.Generator | None) -> torch.Tensor:
    """One category per categorical span, drawn from the softmax of its logits: (N, S) int64.

    Inverse CDF with one uniform per span (the count of cumulative probabilities below it) is an
    exact draw; it needs one exp per logit where Gumbel-max needs two logs and a uniform per
    logit, and it never builds one-hot rows (2.4x faster on Adult's 104 categorical dims).
    """
    cats = [s for s in spans if s.kind == "categorical"]
    u = torch.rand(x.shape[0], len(cats), generator=generator, device=x.device, dtype=torch.float32)
    codes = torch.empty(x.shape[0], len(cats), dtype=torch.long, device=x.device)
    for i, s in enumerate(cats):
        cum = torch.softmax(x[:, s.start:s.end].float(), dim=1).cumsum_(1)  # (N, K)
        codes[:, i] = (cum < u[:, i:i + 1]).sum(1).clamp_(max=s.end - s.start - 1)
    return codes


def one_hot_spans(x: torch.Tensor, codes: torch.Tensor, spans: list[Span]) -> torch.Tensor:
    """``x`` with each categorical span replaced by the one-hot of its drawn code."""
    out = x.clone()
    for i, s in enumerate(s for s in spans if s.kind == "categorical"):
        out[:, s.start:s.end] = 0.0
        out[:, s.start:s.end].scatter_(1, codes[:, i:i + 1], 1.0)
    return out


def sample_spans(x: torch.Tensor, spans: list[Span], generator: torch.Generator | None) -> torch.Tensor:
    """Turn categorical logits into one-hot draws from their softmax; continuous values pass."""
    return one_hot_spans(x, draw_categories(x, spans, generator), spans)


class GenerativeModel(nn.Module):
    """Fit on encoded batches, ``sample(n, generator)``, ``score(x)``."""

    family: str = "base"

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

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError

    def optimizer_state(self) -> dict:
        return {k: o.state_dict() for k, o in self.optimizers.items()}

    def load_optimizer_state(self, state: dict) -> None:
        for k, o in self.optimizers.items():
            o.load_state_dict(state[k])

    # -- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def sample_raw(self, n: int, generator: torch.Generator | None = None,
                   fixed: dict[int, int] | None = None) -> torch.Tensor:
        """``n`` rows of decoder output: continuous values drawn, categorical spans as LOGITS
        (``draw_categories`` draws them). ``fixed`` maps a categorical span's start to a category
        a conditional model should produce; a model that cannot condition ignores it, and the
        caller (``bundle``) keeps only the rows that match."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               fixed: dict[int, int] | None = None) -> torch.Tensor:
        """``n`` encoded rows, categorical spans one-hot."""
        return sample_spans(self.sample_raw(n, generator, fixed), self.spans, generator)

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> torch.Tensor:
        raise PipelineError(
            f"model family {self.family!r} has no anomaly score; train a VAE (model.family=tvae) to score rows"
        )

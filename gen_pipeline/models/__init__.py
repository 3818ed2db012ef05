"""Generative model families, each registered once with what it can do.

A ``ModelSpec`` (as torchtitan's) names the class and declares its capabilities: which data
kinds it models, whether it gives an anomaly score, whether it can be asked for a category
directly. Callers ask the spec, never the family's name. Registering a family is one line in
``FAMILIES``; the class is imported only when a model is built.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from gen_pipeline.errors import PipelineError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    cls: str  # "module:Class", imported on first use
    kinds: tuple[str, ...]  # the data kinds it models
    can_score: bool  # score(x): a per-row anomaly score (a VAE's negative ELBO)
    conditional: bool  # sample_raw(fixed=...) produces the asked category itself (no rejection needed)

    def model_class(self):
        module, attr = self.cls.split(":")
        return getattr(importlib.import_module(module), attr)


FAMILIES = {s.name: s for s in (
    ModelSpec("tvae", "gen_pipeline.models.vae:TabularVAE", ("table",), can_score=True, conditional=False),
    ModelSpec("tvae_mix", "gen_pipeline.models.vae_mix:MixturePriorVAE", ("table",), can_score=True,
              conditional=False),
    ModelSpec("tvae_ar", "gen_pipeline.models.vae_ar:AutoregressiveVAE", ("table",), can_score=True,
              conditional=False),
    ModelSpec("gan", "gen_pipeline.models.gan:TabularGAN", ("table",), can_score=False, conditional=True),
    ModelSpec("dcgan", "gen_pipeline.models.dcgan:DCGAN", ("image",), can_score=False, conditional=True),
    ModelSpec("conv_vae", "gen_pipeline.models.conv_vae:ConvVAE", ("image",), can_score=True, conditional=True),
    ModelSpec("signal_vae", "gen_pipeline.models.signal_vae:SignalVAE", ("signal",), can_score=True,
              conditional=False),
)}


def family(name: str) -> ModelSpec:
    if name not in FAMILIES:
        raise PipelineError(f"model.family: unknown {name!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def build_model(cfg, spans, data_dim: int):
    """The ``cfg.family`` model for data described by ``spans`` (see ``gen_pipeline.spans``)."""
    return family(cfg.family).model_class()(cfg, spans, data_dim)


__all__ = ["FAMILIES", "ModelSpec", "build_model", "family"]

"""Generative model families behind one contract (see ``base.GenerativeModel``)."""

from gen_pipeline.models.base import GenerativeModel, build_model, register

# Importing the families registers them by name.
from gen_pipeline.models import gan as _gan  # noqa: F401,E402
from gen_pipeline.models import vae as _vae  # noqa: F401,E402
from gen_pipeline.models import vae_mix as _vae_mix  # noqa: F401,E402
from gen_pipeline.models import dcgan as _dcgan  # noqa: F401,E402
from gen_pipeline.models import conv_vae as _conv_vae  # noqa: F401,E402

__all__ = ["GenerativeModel", "build_model", "register"]

"""Convolutional towers shared by the image families (DCGAN, conv VAE), in plain torch.

Images arrive flattened in the encoded layout ``(B, C*S*S + K)``: C channel planes of S*S pixels
in [0, 1] (C = 1 grey, 3 RGB), then the label one-hot over K classes (see
``gen_pipeline.kinds.image.transform``). Two stride-2 convolutions take S x S to S/4 x S/4 and back
(28 -> 7, 8 -> 2), as in DCGAN (Radford et al. 2016).

A side that is not a multiple of 4 is padded, never refused: the towers work at
``model_side(S)``, S rounded up to a multiple of 4. ``DownTower`` pads its input to that side by
repeating the edge pixels (half the extra rows and columns before the image, the odd one after:
30 -> 1 + 30 + 1, 10 -> 1 + 10 + 1, 9 -> 1 + 9 + 2), and ``UpTower`` crops its output back to the
same window, so a model reads and writes images of the data's own side. With S a multiple of 4
both are no-ops and the layers are exactly those of a model trained before padding existed.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from gen_pipeline.errors import PipelineError
from gen_pipeline.spans import Span


def image_channels(spans: list[Span]) -> int:
    """C of the image span's (C, H, W) shape: 1 (grey) when the span carries no shape."""
    image = [s for s in spans if s.kind == "image"]
    return int(image[0].shape[0]) if image and image[0].shape else 1


def geometry(spans: list[Span], data_dim: int) -> tuple[int, int]:
    """(image side S, number of classes K) from the spans an ``ImageTransformer`` describes."""
    image = [s for s in spans if s.kind == "image"]
    if not image:
        raise PipelineError("model.family: dcgan/conv_vae need an image dataset (data.dataset: fashion_mnist, "
                            "digits, image_folder or image_npz)")
    d = image[0].end - image[0].start
    c = image_channels(spans)
    side = math.isqrt(d // c)
    if c * side * side != d:
        raise PipelineError(f"images of {d} pixels in {c} channel(s): the conv models need square images "
                            "(crop or pad them to S x S)")
    return side, data_dim - d


def model_side(side: int) -> int:
    """The side the towers work at: S rounded up to a multiple of 4 (28 -> 28, 30 -> 32, 10 -> 12)."""
    return -(-side // 4) * 4


def _margins(side: int) -> tuple[int, int]:
    """(before, after) rows (and columns) that take S to ``model_side(S)``: the odd one after."""
    extra = model_side(side) - side
    return extra // 2, extra - extra // 2


def pad_to_model_side(x: torch.Tensor) -> torch.Tensor:
    """(B, C, S, S) -> (B, C, S', S'), S' = ``model_side(S)``, the edge pixels repeated."""
    before, after = _margins(x.shape[-1])
    if not before + after:
        return x
    return F.pad(x, (before, after, before, after), mode="replicate")


def crop_to_side(x: torch.Tensor, side: int) -> torch.Tensor:
    """(B, C, S', S') -> (B, C, S, S): the window ``pad_to_model_side`` put the image in."""
    before, _ = _margins(side)
    if x.shape[-1] == side:
        return x
    return x[..., before:before + side, before:before + side]


def split_batch(batch: torch.Tensor, side: int, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C*S*S + K) -> images (B, C, S, S), one-hot labels (B, K)."""
    d = channels * side * side
    return batch[:, :d].reshape(-1, channels, side, side), batch[:, d:]


def label_planes(y: torch.Tensor, side: int) -> torch.Tensor:
    """One-hot (B, K) -> (B, K, S, S): the condition as extra input channels (Mirza & Osindero 2014)."""
    return y[:, :, None, None].expand(-1, -1, side, side)


def label_start(spans: list[Span]) -> int | None:
    """Where the label one-hot starts in the encoded row (None: the set has no classes)."""
    return next((s.start for s in spans if s.kind == "label"), None)


def one_hot_labels(n: int, k: int, fixed: dict | None, start: int | None, generator, device) -> torch.Tensor:
    """(n, k) one-hot of the asked labels (``fixed[start]``: one class or an (n,) tensor) or of
    uniform draws; (n, 0) when the model is unconditional."""
    if k == 0:
        return torch.zeros(n, 0, device=device)
    labels = (fixed or {}).get(start)
    if labels is None:
        labels = torch.randint(k, (n,), generator=generator, device=device)
    elif not torch.is_tensor(labels):
        labels = torch.full((n,), int(labels), dtype=torch.long)
    return torch.nn.functional.one_hot(labels.to(device).long(), k).float()


def init_dcgan(m: nn.Module) -> None:
    """N(0, 0.02) weights, as in the DCGAN paper; BatchNorm scales around 1."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        if nn.utils.parametrize.is_parametrized(m, "weight"):  # spectral norm: the raw weight
            nn.init.normal_(m.parametrizations.weight.original, 0.0, 0.02)
        else:
            nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def _up(in_ch: int, out_ch: int, upsample: str) -> list[nn.Module]:
    """Double the side: a 4x4 stride-2 transposed conv, or nearest-neighbour x2 then a 3x3 conv
    (resize-convolution, Odena et al. 2016: every output pixel gets the same number of kernel
    taps, so no checkerboard)."""
    if upsample == "transposed":
        return [nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1)]
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_ch, out_ch, 3, 1, 1)]


class UpTower(nn.Module):
    """(B, in_dim) -> (B, C, S, S) logits: project to S'/4 x S'/4 x 2c, two x2 upsamplings to
    S' = ``model_side(S)``, then the S x S window (``crop_to_side``)."""

    def __init__(self, in_dim: int, side: int, c: int, batch_norm: bool, upsample: str = "transposed",
                 channels: int = 1):
        super().__init__()
        self.side, self.c = side, c
        q = model_side(side) // 4
        norm1 = nn.BatchNorm1d(2 * c * q * q) if batch_norm else nn.Identity()
        norm2 = nn.BatchNorm2d(c) if batch_norm else nn.Identity()
        self.project = nn.Sequential(nn.Linear(in_dim, 2 * c * q * q), norm1, nn.ReLU())
        self.up = nn.Sequential(
            *_up(2 * c, c, upsample), norm2, nn.ReLU(),  # (B, c, S'/2, S'/2)
            *_up(c, channels, upsample),                 # (B, C, S', S')
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        q = model_side(self.side) // 4
        return crop_to_side(self.up(self.project(h).reshape(-1, 2 * self.c, q, q)), self.side)


class DownTower(nn.Module):
    """(B, in_ch, S, S) -> (B, 2c * (S'/4)^2) features: the input padded to S' = ``model_side(S)``
    (``pad_to_model_side``), then two stride-2 convs with leaky ReLUs.

    ``spectral_norm``: each conv's weight divided by its largest singular value (one power
    iteration per training forward; Miyato et al. 2018), so the layer is 1-Lipschitz in its
    reshaped-matrix norm and the discriminator cannot sharpen without bound on few images."""

    def __init__(self, in_ch: int, side: int, c: int, dropout: float = 0.0, spectral_norm: bool = False):
        super().__init__()
        self.out_dim = 2 * c * (model_side(side) // 4) ** 2
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        self.net = nn.Sequential(
            sn(nn.Conv2d(in_ch, c, 4, 2, 1)), nn.LeakyReLU(0.2), nn.Dropout(dropout),      # (B, c, S'/2, S'/2)
            sn(nn.Conv2d(c, 2 * c, 4, 2, 1)), nn.LeakyReLU(0.2), nn.Dropout(dropout),  # (B, 2c, S'/4, S'/4)
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pad_to_model_side(x))

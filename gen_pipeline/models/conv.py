"""Convolutional towers shared by the image families (DCGAN, conv VAE), in plain torch.

Images arrive flattened in the encoded layout ``(B, C*H*W + K)``: C channel planes of H*W pixels
in [0, 1] (C = 1 grey, 3 RGB), then the label one-hot over K classes (see
``gen_pipeline.kinds.image.transform``). Two stride-2 convolutions take H x W to H/4 x W/4 and back
(28 x 28 -> 7 x 7, 8 x 12 -> 2 x 3), as in DCGAN (Radford et al. 2016). Images need not be square:
every function here takes the image size as ``side``, an int S for S x S or a pair (H, W).

A side that is not a multiple of 4 is padded, never refused: the towers work at
``model_side(H) x model_side(W)``, each side rounded up to a multiple of 4 on its own.
``DownTower`` pads its input to that size by repeating the edge pixels (half the extra rows or
columns before the image, the odd one after: 30 -> 1 + 30 + 1, 10 -> 1 + 10 + 1, 9 -> 1 + 9 + 2),
and ``UpTower`` crops its output back to the same window, so a model reads and writes images of
the data's own H x W. With both sides multiples of 4 both are no-ops, and for square images the
layers are exactly those of a model trained before padding and non-square sizes existed.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from gen_pipeline.errors import PipelineError
from gen_pipeline.spans import Span, image_hw


def image_channels(spans: list[Span]) -> int:
    """C of the image span's (C, H, W) shape: 1 (grey) when the span carries no shape."""
    image = [s for s in spans if s.kind == "image"]
    return int(image[0].shape[0]) if image and image[0].shape else 1


def geometry(spans: list[Span], data_dim: int) -> tuple[tuple[int, int], int]:
    """((H, W), number of classes K) from the spans an ``ImageTransformer`` describes.

    The image span's ``shape`` (C, H, W) gives H and W; a span without one (written before spans
    carried shapes) is one grey plane of S*S pixels."""
    image = [s for s in spans if s.kind == "image"]
    if not image:
        raise PipelineError("model.family: dcgan/conv_vae need an image dataset (data.dataset: fashion_mnist, "
                            "digits, image_folder or image_npz)")
    d = image[0].end - image[0].start
    c = image_channels(spans)
    if len(image[0].shape) == 3:
        h, w = int(image[0].shape[1]), int(image[0].shape[2])
        if c * h * w != d or min(h, w) < 1:
            raise PipelineError(f"image span of {d} values does not hold its shape {tuple(image[0].shape)}; "
                                "rebuild the transform spec (run preprocess again)")
        return (h, w), data_dim - d
    side = math.isqrt(d // c)
    if c * side * side != d:
        raise PipelineError(f"images of {d} pixels in {c} channel(s) and no (C, H, W) shape: the conv models "
                            "cannot tell their height and width (run preprocess again to record the shape)")
    return (side, side), data_dim - d


def model_side(side: int) -> int:
    """The side the towers work at: S rounded up to a multiple of 4 (28 -> 28, 30 -> 32, 10 -> 12)."""
    return -(-side // 4) * 4


def _margins(side: int) -> tuple[int, int]:
    """(before, after) rows (and columns) that take S to ``model_side(S)``: the odd one after."""
    extra = model_side(side) - side
    return extra // 2, extra - extra // 2


def pad_to_model_side(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H', W'), H' = ``model_side(H)``, W' = ``model_side(W)``, the edge
    pixels repeated."""
    top, bottom = _margins(x.shape[-2])
    left, right = _margins(x.shape[-1])
    if not top + bottom + left + right:
        return x
    return F.pad(x, (left, right, top, bottom), mode="replicate")


def crop_to_side(x: torch.Tensor, side: int | tuple[int, int]) -> torch.Tensor:
    """(B, C, H', W') -> (B, C, H, W): the window ``pad_to_model_side`` put the image in."""
    h, w = image_hw(side)
    if x.shape[-2:] == (h, w):
        return x
    top, left = _margins(h)[0], _margins(w)[0]
    return x[..., top:top + h, left:left + w]


def split_batch(batch: torch.Tensor, side: int | tuple[int, int],
                channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C*H*W + K) -> images (B, C, H, W), one-hot labels (B, K)."""
    h, w = image_hw(side)
    d = channels * h * w
    return batch[:, :d].reshape(-1, channels, h, w), batch[:, d:]


def label_planes(y: torch.Tensor, side: int | tuple[int, int]) -> torch.Tensor:
    """One-hot (B, K) -> (B, K, H, W): the condition as extra input channels (Mirza & Osindero 2014)."""
    return y[:, :, None, None].expand(-1, -1, *image_hw(side))


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
    """(B, in_dim) -> (B, C, H, W) logits: project to 2c x H'/4 x W'/4, two x2 upsamplings to
    H' x W' (each side ``model_side``), then the H x W window (``crop_to_side``). ``side``: S or (H, W)."""

    def __init__(self, in_dim: int, side: int | tuple[int, int], c: int, batch_norm: bool,
                 upsample: str = "transposed", channels: int = 1):
        super().__init__()
        self.side, self.c = side, c
        h, w = image_hw(side)
        self.q = (model_side(h) // 4, model_side(w) // 4)  # the projection's (H'/4, W'/4)
        cells = self.q[0] * self.q[1]
        norm1 = nn.BatchNorm1d(2 * c * cells) if batch_norm else nn.Identity()
        norm2 = nn.BatchNorm2d(c) if batch_norm else nn.Identity()
        self.project = nn.Sequential(nn.Linear(in_dim, 2 * c * cells), norm1, nn.ReLU())
        self.up = nn.Sequential(
            *_up(2 * c, c, upsample), norm2, nn.ReLU(),  # (B, c, H'/2, W'/2)
            *_up(c, channels, upsample),                 # (B, C, H', W')
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return crop_to_side(self.up(self.project(h).reshape(-1, 2 * self.c, *self.q)), self.side)


class DownTower(nn.Module):
    """(B, in_ch, H, W) -> (B, 2c * H'/4 * W'/4) features: the input padded to H' x W' (each side
    ``model_side``; ``pad_to_model_side``), then two stride-2 convs with leaky ReLUs. ``side``: S or (H, W).

    ``spectral_norm``: each conv's weight divided by its largest singular value (one power
    iteration per training forward; Miyato et al. 2018), so the layer is 1-Lipschitz in its
    reshaped-matrix norm and the discriminator cannot sharpen without bound on few images."""

    def __init__(self, in_ch: int, side: int | tuple[int, int], c: int, dropout: float = 0.0,
                 spectral_norm: bool = False):
        super().__init__()
        h, w = image_hw(side)
        self.out_dim = 2 * c * (model_side(h) // 4) * (model_side(w) // 4)
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        self.net = nn.Sequential(
            sn(nn.Conv2d(in_ch, c, 4, 2, 1)), nn.LeakyReLU(0.2), nn.Dropout(dropout),      # (B, c, H'/2, W'/2)
            sn(nn.Conv2d(c, 2 * c, 4, 2, 1)), nn.LeakyReLU(0.2), nn.Dropout(dropout),  # (B, 2c, H'/4, W'/4)
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pad_to_model_side(x))

"""Differentiable augmentation for GAN discriminators (DiffAugment, Zhao et al. 2020).

With few training images the discriminator memorises them and its gradients stop telling the
generator anything useful. DiffAugment applies the same family of random transformations to
every image the discriminator sees, real and generated, in both the discriminator's and the
generator's step. Every operation is differentiable in the pixels, so the generator's gradient
flows back through the augmentation; because generated images are augmented too, the
generator is not pushed to produce augmented-looking images.

Policies (the paper's "color,translation,cutout"), on images (B, C, S, S) with pixels in [0, 1]:

- ``color``: brightness (add U(-0.25, 0.25) per image), saturation (scale each pixel's
  distance to its grey value by U(0, 2); a no-op on one channel), contrast (scale the distance
  to the image's mean by U(0.5, 1.5)). The paper draws these on pixels in [-1, 1]; the ranges
  here are the same transformations on [0, 1].
- ``translation``: shift by up to 1/8 of the side in each direction, the uncovered border 0
  (black: the background of most small image sets, and what padding gives in [0, 1]).
- ``cutout``: zero one square of half the side at a random position (DeVries & Taylor 2017).

Labels are unaffected: each transformation keeps the class of an image.
"""

from __future__ import annotations

import torch

POLICIES = ("color", "translation", "cutout")


def _uniform(b: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(B, 1, 1, 1) uniforms on [0, 1), drawn on the CPU when a CPU generator is given."""
    dev = generator.device if generator is not None else like.device
    return torch.rand(b, 1, 1, 1, generator=generator, device=dev).to(like.device, like.dtype)


def _randint(high: torch.Tensor | int, low: int, b: int, like: torch.Tensor,
             generator: torch.Generator | None) -> torch.Tensor:
    dev = generator.device if generator is not None else like.device
    return torch.randint(low, high, (b,), generator=generator, device=dev).to(like.device)


def color(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    b = x.shape[0]
    x = x + (_uniform(b, x, generator) - 0.5) * 0.5  # brightness
    if x.shape[1] > 1:
        grey = x.mean(1, keepdim=True)
        x = (x - grey) * (_uniform(b, x, generator) * 2) + grey  # saturation
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(b, x, generator) + 0.5) + mean  # contrast


def translation(x: torch.Tensor, generator: torch.Generator | None = None, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sh, sw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    dy = _randint(sh + 1, -sh, b, x, generator)  # (B,) in [-sh, sh]
    dx = _randint(sw + 1, -sw, b, x, generator)
    padded = torch.nn.functional.pad(x, (sw, sw, sh, sh))  # zeros around: (B, C, H + 2sh, W + 2sw)
    rows = (torch.arange(h, device=x.device)[None, :] + sh - dy[:, None])  # (B, H) source row per output row
    cols = (torch.arange(w, device=x.device)[None, :] + sw - dx[:, None])  # (B, W)
    idx_b = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C): a gather
    return out.permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, generator: torch.Generator | None = None, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    # The square's centre anywhere in the image (it may hang over the border, as in the paper).
    cy = _randint(h + (1 - ch % 2), 0, b, x, generator)
    cx = _randint(w + (1 - cw % 2), 0, b, x, generator)
    ys = torch.arange(h, device=x.device)[None, :] - (cy[:, None] - ch // 2)  # (B, H)
    xs = torch.arange(w, device=x.device)[None, :] - (cx[:, None] - cw // 2)
    inside = ((ys >= 0) & (ys < ch))[:, :, None] & ((xs >= 0) & (xs < cw))[:, None, :]  # (B, H, W)
    return x * (~inside)[:, None].to(x.dtype)


_OPS = {"color": color, "translation": translation, "cutout": cutout}


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"color,translation,cutout"`` -> its names; ``""`` or ``"none"`` -> none."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip() and p.strip() != "none")
    for p in names:
        if p not in _OPS:
            raise ValueError(f"unknown DiffAugment policy {p!r} (known: {', '.join(POLICIES)})")
    return names


def diff_augment(x: torch.Tensor, policy: str | tuple[str, ...],
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` (B, C, S, S) in [0, 1] through each named transformation, in the given order,
    with fresh random parameters per image; differentiable in ``x``; same shape out."""
    names = parse_policy(policy) if isinstance(policy, str) else policy
    for p in names:
        x = _OPS[p](x, generator)
    return x

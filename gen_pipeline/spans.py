"""The one contract between data and models: the encoded vector as a list of spans.

A data kind's fitted encoding describes each batch row as consecutive spans; models see only
these (as CTGAN's ``SpanInfo``), never a column name or a file. The span kinds:

- ``continuous``: one real value (a standardised or quantile-normalised number, or a VGM
  offset; ``bounded`` ones live in [-1, 1] and models emit tanh for them);
- ``categorical``: a softmax block (a column's one-hot, a VGM mode, a null flag); ``cond``
  marks a categorical COLUMN that a condition can name, with its training ``freqs``;
- ``image``: C*H*W pixel intensities in [0, 1], channel planes, each row-major (``shape``);
- ``signal``: L samples of a 1-D signal, standardised.
"""

from __future__ import annotations

from dataclasses import dataclass

SPAN_KINDS = ("continuous", "categorical", "image", "signal")


@dataclass(frozen=True)
class Span:
    """A slice ``[start, end)`` of the encoded vector."""

    kind: str
    start: int
    end: int
    bounded: bool = False  # a continuous value that lives in [-1, 1] (a VGM offset): models emit tanh
    cond: bool = False  # a categorical COLUMN (not a mode or a null flag): conditions can name it
    freqs: tuple[float, ...] = ()  # for a ``cond`` span, its categories' training frequencies
    shape: tuple[int, ...] = ()  # for an ``image`` span, (C, H, W) (empty: one square grey plane)


def image_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) of an image size given as a side S (S x S) or as (H, W): how image sources, the conv
    models and the FID classifier take a size."""
    return (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))

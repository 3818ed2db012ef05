"""The image encoding and its inverse: uint8 pixels (+ a class label) <-> the ``features`` layout.

Raw and generated images are uint8 bytes in the order numpy and PIL keep them: row-major, and
for RGB the channels last (H, W, 3: R, G, B interleaved); grey images are H*W bytes.

Encoded layout (one ``features`` float32 vector per image, so both loaders hand torch a
``(B, C*H*W + K)`` tensor without changes): the C*H*W pixels scaled to [0, 1] (``pixel / 255``)
as C channel planes (C = 1 grey, 3 RGB), each row-major, as convolutions take them; then the
class label one-hot over K classes (all zeros when the image has none). The spec
(``transform_spec.json``, ``kind: image``) records the shape [C, H, W], the scaling and the
class names, so generate inverts it to uint8 pixels and score encodes raw images the same way.
For C = 1 the planes and the interleaved bytes are the same order. H and W may differ (the
user's own non-square images); every image of a set has the same H x W.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gen_pipeline.errors import PipelineError
from gen_pipeline.kinds.table.schema import Column
from gen_pipeline.spans import Span

IMAGE_SPEC_VERSION = 1
PIXEL_MAX = 255.0  # every source is read as uint8 intensities; the model sees pixel / 255


class ImageSchema:
    """The generated/scored columns: ``image`` (H*W*C uint8 bytes, row-major, channels last) and ``label``."""

    def __init__(self, size: int):
        self.size = size
        self.columns = (Column("image", "continuous", "string"), Column("label", "categorical", "int"))
        self.names = ["image", "label"]
        self.model_columns = self.columns
        self.label_columns: list[str] = []

    def spark_ddl(self, model_only: bool = False) -> str:
        return "image binary, label int"

    def arrow_schema(self, model_only: bool = False):
        import pyarrow as pa

        return pa.schema([pa.field("image", pa.binary()), pa.field("label", pa.int32())])


class ImageTransformer:
    """Encodes uint8 images (+ labels) to the ``features`` layout and decodes model output back."""

    kind = "image"

    def __init__(self, spec: dict):
        if spec.get("version") != IMAGE_SPEC_VERSION:
            raise PipelineError(f"image spec version {spec.get('version')!r} is not supported "
                                f"(supported: {IMAGE_SPEC_VERSION}); retrain the model or install a matching release")
        self.spec = spec
        self.channels = int(spec["shape"][0])
        self.height, self.width = int(spec["shape"][1]), int(spec["shape"][2])
        self.size = (self.height, self.width)  # what the image readers expect of every image
        self.image_dim = self.channels * self.height * self.width
        # one image as numpy holds it: (H, W) grey, (H, W, C) colour
        self.image_shape = (self.height, self.width) + ((self.channels,) if self.channels > 1 else ())
        self.classes = list(spec["classes"])
        self.num_classes = len(self.classes)
        self.output_dim = self.image_dim + self.num_classes
        self.spans = [Span("image", 0, self.image_dim, shape=(self.channels, self.height, self.width))]
        if self.num_classes:
            self.spans.append(Span("label", self.image_dim, self.output_dim))  # a condition: given, never drawn
        self.schema = ImageSchema(self.size)
        self.label_start = self.image_dim if self.num_classes else None

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.spec, indent=1))

    def condition(self, column: str, value: str) -> tuple[int, int]:
        """``label=Sandal`` (a class name or index) -> (label span start, class index)."""
        if column != "label" or not self.num_classes:
            raise PipelineError(f"--condition {column}={value}: an image set's only condition is label=CLASS"
                                + ("" if self.num_classes else " (this set has no classes)"))
        if value in self.classes:
            return self.label_start, self.classes.index(value)
        if value.isdigit() and int(value) < self.num_classes:
            return self.label_start, int(value)
        raise PipelineError(f"--condition label={value}: not a class of this set ({self.classes[:12]})")

    # ---- sampling: model output -> rows (pixels are drawn by the model; labels are given) ------
    def draw(self, raw, generator):
        return None

    def matches(self, raw, codes, fixed: dict):
        import torch

        lab = torch.from_numpy(self.labels(raw.numpy()))
        keep = torch.ones(len(raw), dtype=torch.bool)
        for _, index in fixed.items():
            keep &= lab == index
        return keep

    def to_arrow(self, x: np.ndarray, codes=None, dictionary: bool = False, row_offset: int | None = None):
        return self.inverse_to_arrow(x)

    def encode(self, pixels: np.ndarray, labels) -> np.ndarray:
        """uint8 (N, H*W*C) channels last + labels (N,) (None/-1 = unlabelled) -> float32 (N, C*H*W + K)."""
        out = np.zeros((len(pixels), self.output_dim), dtype=np.float32)
        planes = pixels.reshape(len(pixels), self.height * self.width, self.channels).transpose(0, 2, 1)
        out[:, :self.image_dim] = planes.reshape(len(pixels), -1).astype(np.float32) / PIXEL_MAX
        if self.num_classes and labels is not None:
            lab = np.array([-1 if v is None or v != v else int(v) for v in labels], dtype=np.int64)
            ok = (lab >= 0) & (lab < self.num_classes)
            out[np.flatnonzero(ok), self.image_dim + lab[ok]] = 1.0
        return out

    def pixels(self, x: np.ndarray) -> np.ndarray:
        """Model output (N, D) -> uint8 images (N, H, W) grey or (N, H, W, C): the inverse of ``pixel / 255``."""
        planes = np.clip(np.rint(x[:, :self.image_dim] * PIXEL_MAX), 0, 255).astype(np.uint8).reshape(
            -1, self.channels, self.height, self.width)
        return np.ascontiguousarray(planes.transpose(0, 2, 3, 1)).reshape((-1,) + self.image_shape)

    def labels(self, x: np.ndarray) -> np.ndarray:
        """The one-hot label part -> int labels, -1 where there is none."""
        if not self.num_classes:
            return np.full(len(x), -1)
        block = x[:, self.image_dim:]
        return np.where(block.max(1) > 0, block.argmax(1), -1)

    def inverse_to_arrow(self, x: np.ndarray):
        import pyarrow as pa

        n = len(x)
        data = self.pixels(x).reshape(-1)
        offsets = np.arange(0, n * self.image_dim + 1, self.image_dim, dtype=np.int32)
        image = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
        lab = self.labels(x)
        label = pa.array(lab.astype(np.int32), mask=lab < 0)
        return pa.Table.from_arrays([image, label], schema=self.schema.arrow_schema())

    def inverse_transform(self, x: np.ndarray):
        return self.inverse_to_arrow(x).to_pandas()

    def transform(self, df, strict: bool = True) -> tuple[np.ndarray, list[str | None]]:
        """Rows with ``image`` (H*W*C uint8 bytes) and optional ``label`` -> features, reasons."""
        n = len(df)
        pix = np.zeros((n, self.image_dim), dtype=np.uint8)
        reasons: list[str | None] = [None] * n
        for i, b in enumerate(df["image"]):
            if b is None or len(b) != self.image_dim:
                msg = (f"image: {0 if b is None else len(b)} bytes, expected {self.image_dim} "
                       f"({'x'.join(map(str, self.image_shape))})")
                if strict:
                    raise PipelineError(f"row {i}: {msg}")
                reasons[i] = msg
            else:
                pix[i] = np.frombuffer(b, dtype=np.uint8)
        labels = df["label"].tolist() if "label" in df.columns else None
        return self.encode(pix, labels), reasons

"""Image sources: idx.gz files, PNG folders and .npz arrays, listed as cheap work units on the
driver and decoded inside Spark tasks (pure numpy/PIL, so unit tests reach the readers directly).


Every raw image is a row: rows_in == rows_written + rows_quarantined (+ rows excluded from train
by ``data.train_where``, a Spark SQL condition on ``label``). A wrong-size, unreadable or
corrupt image goes to ``quarantine/`` with its source, index and reason.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gen_pipeline.config import PipelineConfig
from gen_pipeline.errors import PipelineError
from gen_pipeline.kinds.image.transform import PIXEL_MAX

UNIT_ROWS = 5_000  # images per Spark task
RAW_DDL = "source string, `index` bigint, split_hint string, label int, pixels binary, reason string"


# ---------------------------------------------------------------------------------------------
# Sources: the driver lists cheap work units (headers, file names); Spark tasks decode them.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageSource:
    """A raw image set: its kind, files, expected side, class names and the work units to decode."""

    name: str
    kind: str  # "idx" | "folder" | "npz"
    files: tuple[Path, ...]
    size: int
    classes: tuple[str, ...]
    units: tuple[dict, ...]


def _idx_header(path: Path, dims: int) -> tuple[int, tuple[int, ...]]:
    """(record count, record shape) from an idx file's header; one line naming the file if bad."""
    want = 0x0800 + dims  # unsigned byte data, ``dims`` dimensions
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(4 + 4 * dims)
    except (OSError, EOFError) as e:
        raise PipelineError(f"{path}: not a readable gzip file ({e}); fetch the dataset again") from None
    if len(head) < 4 + 4 * dims or struct.unpack(">I", head[:4])[0] != want:
        raise PipelineError(f"{path}: not an idx file of uint8 with {dims} dimension(s) (bad magic number); "
                            "pass the matching images/labels idx.gz files")
    shape = struct.unpack(f">{dims}I", head[4:])
    return shape[0], tuple(shape[1:])


def idx_source(name: str, pairs: list[tuple[Path, Path, str]], size: int, classes: tuple[str, ...]) -> ImageSource:
    """``pairs``: (images idx3.gz, labels idx1.gz, split hint: "train" | "test" | "")."""
    units = []
    for images, labels, hint in pairs:
        for f in (images, labels):
            if not Path(f).is_file():
                raise PipelineError(f"{f}: input file not found; fetch the dataset or pass an existing file")
        n, _ = _idx_header(images, 3)
        _idx_header(labels, 1)
        for start in range(0, n, UNIT_ROWS):
            units.append({"kind": "idx", "path": str(images), "labels": str(labels), "hint": hint,
                          "start": start, "count": min(UNIT_ROWS, n - start)})
    files = tuple(Path(f) for p in pairs for f in p[:2])
    return ImageSource(name, "idx", files, size, classes, tuple(units))


def folder_source(folder: Path, size: int) -> ImageSource:
    """A folder of PNGs; a subfolder per class names the label (``folder/<class>/*.png``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineError(f"{folder}: image folder not found; set data.path to a folder of PNGs")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() == ".png")
    if not files:
        raise PipelineError(f"{folder}: no .png files found; nothing to read")
    classes = tuple(sorted({p.parent.name for p in files if p.parent != folder}))
    units = []
    for i in range(0, len(files), UNIT_ROWS // 5):  # PNG decoding is slower per image
        chunk = files[i:i + UNIT_ROWS // 5]
        units.append({"kind": "png", "paths": [str(p.relative_to(folder)) for p in chunk], "root": str(folder),
                      "start": i, "hint": ""})
    return ImageSource(folder.name, "folder", tuple(files), size, classes, tuple(units))


def npz_source(path: Path, size: int) -> ImageSource:
    """An .npz with ``x`` (N, H, W) or (N, H*W) uint8 images and optional ``y`` labels, ``classes``."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: input file not found; set data.path to an existing .npz")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise PipelineError(f"{path}: no array named 'x' (found {z.files}); save images as x=, labels as y=")
            n = int(z["x"].shape[0])
            y = z["y"] if "y" in z.files else None
            classes = tuple(str(c) for c in z["classes"]) if "classes" in z.files else ()
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path}: not a readable .npz ({str(e)[:160]}); pass a numpy savez file") from None
    if not classes and y is not None and len(y):
        classes = tuple(str(i) for i in range(int(np.max(y)) + 1))  # labels only: bounded
    units = [{"kind": "npz", "path": str(path), "start": s, "count": min(UNIT_ROWS, n - s), "hint": ""}
             for s in range(0, n, UNIT_ROWS)]
    return ImageSource(path.stem, "npz", (path,), size, classes, tuple(units))


def image_source(cfg: PipelineConfig, datasets_dir: Path) -> ImageSource:
    """The configured image set, fetched into the dataset cache where it comes from a package."""
    from gen_pipeline.kinds.image import datasets

    d = cfg.data
    if d.dataset == "fashion_mnist":
        folder = datasets.fetch_fashion_mnist(datasets_dir)
        return idx_source("fashion_mnist", [
            (folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz", "train"),
            (folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz", "test")],
            d.image_size or 28, datasets.FASHION_MNIST_CLASSES)
    if d.dataset == "digits":
        return npz_source(datasets.fetch_digits(datasets_dir), d.image_size or 8)
    if not d.path:
        raise PipelineError(f"data.path: required for data.dataset={d.dataset} (the PNG folder or the .npz file)")
    if d.dataset == "image_folder":
        return folder_source(Path(d.path), d.image_size or 28)
    return npz_source(Path(d.path), d.image_size or 28)


# ---------------------------------------------------------------------------------------------
# Decoding one unit (runs inside a Spark task; pure numpy/PIL so unit tests reach it directly)
# ---------------------------------------------------------------------------------------------
def _read_idx(unit: dict, size: int, num_classes: int) -> list[tuple]:
    n_img, shape = _idx_header(Path(unit["path"]), 3)
    n_lab, _ = _idx_header(Path(unit["labels"]), 1)
    d = shape[0] * shape[1]
    start, count = unit["start"], unit["count"]
    src = Path(unit["path"]).name
    rows = []
    buf, labels, error = bytearray(), b"", None
    try:
        with gzip.open(unit["path"], "rb") as f:
            f.seek(16 + start * d)  # gzip seeks by decompressing: bounded by the file
            while len(buf) < count * d:  # in blocks, so the images before a corrupt spot are kept
                block = f.read(min(1 << 16, count * d - len(buf)))
                if not block:
                    break
                buf += block
    except (OSError, EOFError, gzip.BadGzipFile) as e:  # a CRC error or a truncated stream
        error = f"unreadable: {Path(unit['path']).name} is corrupt from here on ({str(e)[:120]})"
    pixels = bytes(buf)
    try:
        with gzip.open(unit["labels"], "rb") as f:
            f.seek(8 + start)
            labels = f.read(count)
    except (OSError, EOFError, gzip.BadGzipFile):
        labels = b""
    for i in range(count):
        idx = start + i
        chunk = pixels[i * d:(i + 1) * d]
        label = labels[i] if i < len(labels) and start + i < n_lab else None
        if shape != (size, size):
            reason = f"wrong size: {shape[0]}x{shape[1]}, expected {size}x{size}"
        elif len(chunk) < d:
            reason = error or f"corrupt: file ends after {len(chunk)} of {d} bytes of this image (truncated)"
        elif label is None:
            reason = f"no label: {Path(unit['labels']).name} has {n_lab} records"
        elif label >= num_classes:
            reason = f"label {label} out of range (0..{num_classes - 1})"
        else:
            reason = None
        rows.append((src, idx, unit["hint"], None if label is None else int(label),
                     None if reason else bytes(chunk), reason))
    return rows


def _read_png(unit: dict, size: int, classes: tuple[str, ...]) -> list[tuple]:
    from PIL import Image, UnidentifiedImageError

    rows = []
    root = Path(unit["root"])
    for i, rel in enumerate(unit["paths"]):
        path = root / rel
        parent = Path(rel).parent.name
        label = classes.index(parent) if parent in classes else None
        try:
            with Image.open(path) as im:
                im.load()  # decodes now: a truncated or corrupt file fails here, not later
                w, h = im.size
                gray = im.convert("L") if im.mode != "L" else im
                arr = np.asarray(gray, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            rows.append((rel, unit["start"] + i, "", label, None, f"unreadable image: {str(e)[:160]}"))
            continue
        if (w, h) != (size, size):
            rows.append((rel, unit["start"] + i, "", label, None, f"wrong size: {w}x{h}, expected {size}x{size}"))
            continue
        rows.append((rel, unit["start"] + i, "", label, arr.tobytes(), None))
    return rows


def _read_npz(unit: dict, size: int, num_classes: int) -> list[tuple]:
    path = Path(unit["path"])
    start, count = unit["start"], unit["count"]
    with np.load(path, allow_pickle=False) as z:
        x = z["x"][start:start + count]
        y = z["y"][start:start + count] if "y" in z.files else None
    shape = x.shape[1:]
    flat = x.reshape(len(x), -1)
    rows = []
    for i in range(len(x)):
        label = None if y is None else int(y[i])
        img = flat[i].astype(np.float64)
        if shape not in ((size, size), (size * size,)):
            reason = f"wrong size: {'x'.join(map(str, shape))}, expected {size}x{size}"
        elif not np.isfinite(img).all():
            reason = "corrupt: non-finite pixel values"
        elif img.min() < 0 or img.max() > PIXEL_MAX or (img != np.rint(img)).any():
            reason = f"corrupt: pixel values outside the integers 0..255 (min {img.min():g}, max {img.max():g})"
        elif label is not None and not 0 <= label < num_classes:
            reason = f"label {label} out of range (0..{num_classes - 1})"
        else:
            reason = None
        rows.append((path.name, start + i, "", label, None if reason else img.astype(np.uint8).tobytes(), reason))
    return rows


def decode_unit(unit: dict, size: int, classes: tuple[str, ...]) -> list[tuple]:
    """(source, index, split hint, label, uint8 pixel bytes or None, reason or None) per image."""
    if unit["kind"] == "idx":
        return _read_idx(unit, size, len(classes))
    if unit["kind"] == "png":
        return _read_png(unit, size, classes)
    return _read_npz(unit, size, len(classes))

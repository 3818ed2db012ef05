"""Image sources: idx.gz files, PNG folders and .npz arrays, listed as cheap work units on the
driver and decoded inside Spark tasks (pure numpy/PIL, so unit tests reach the readers directly).


Every raw image is a row: rows_in == rows_written + rows_quarantined (+ rows excluded from train
by ``data.train_where``, a Spark SQL condition on ``label``). A wrong-size, unreadable or
corrupt image goes to ``quarantine/`` with its source, index and reason.

The user's images as they come (the rule README's image input section states):

- Size: ``data.image_size`` (S x S), or when unset the size of the images themselves, square or
  not (an .npz: its array's H x W; a PNG folder: the size most of its images have, read from the
  PNG headers); one of another size is quarantined as ``wrong size`` (sizes are written width x
  height). Any H and W >= 4 are taken: the conv models pad a side that is not a multiple of 4
  (``gen_pipeline.models.conv``, each side on its own) and write images of the original H x W.
- Channels: grey (1) or RGB (3). An .npz says it by its shape: (N, H, W), (N, H*W) or
  (N, H, W, 1) grey; (N, H, W, 3) RGB ((N, 1 or 3, H, W), channels first, is read the same).
  A PNG folder is RGB when one of its images holds colour (a pixel whose R, G and B differ, in
  up to ``COLOUR_PROBES`` images stored in a colour or palette mode), else grey; each image is
  then converted to that mode (grey pixels repeated into R, G, B; colour to grey by ITU-R 601
  luma, PIL's "L"). An alpha channel is dropped. At score time images are converted to the
  model's channel count the same way.
"""

from __future__ import annotations

import gzip
import math
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gen_pipeline.config import PipelineConfig
from gen_pipeline.errors import PipelineError
from gen_pipeline.kinds.image.transform import PIXEL_MAX
from gen_pipeline.spans import image_hw

UNIT_ROWS = 5_000  # images per Spark task
RAW_DDL = "source string, `index` bigint, split_hint string, label int, pixels binary, reason string"


# ---------------------------------------------------------------------------------------------
# Sources: the driver lists cheap work units (headers, file names); Spark tasks decode them.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageSource:
    """A raw image set: its kind, files, expected size, class names, the work units to decode and
    the channel count every image is decoded to (1 grey, 3 RGB)."""

    name: str
    kind: str  # "idx" | "folder" | "npz"
    files: tuple[Path, ...]
    size: int | tuple[int, int]  # S for S x S images, (H, W) for others
    classes: tuple[str, ...]
    units: tuple[dict, ...]
    channels: int = 1


COLOUR_PROBES = 64  # images of a PNG folder decoded on the driver to tell colour from grey
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


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


def _size_text(h: int, w: int) -> str:
    """How messages write an image size: width x height, as image viewers and PIL do."""
    return f"{w}x{h}"


def _image_size(h: int, w: int, where: str) -> int | tuple[int, int]:
    """The size of H x W images (S when square, else (H, W)), refused in one line when a side is below 4."""
    if min(h, w) < 4:
        raise PipelineError(f"{where}: the images are {w}x{h}; the image models need a side of at least 4")
    return h if h == w else (h, w)


def _png_headers(files: list[Path]) -> tuple[Counter, list[Path]]:
    """(count of each (width, height), the files stored in a colour or palette mode), from the
    PNG headers only (PIL reads no pixels until asked); unreadable files are left to the reader."""
    from PIL import Image, UnidentifiedImageError

    sizes, colour = Counter(), []
    for f in files:
        try:
            with Image.open(f) as im:
                sizes[im.size] += 1
                if im.mode not in GREY_MODES:
                    colour.append(f)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):  # the reader quarantines it
            continue
    return sizes, colour


def _holds_colour(files: list[Path]) -> bool:
    """Whether one of up to ``COLOUR_PROBES`` evenly spaced ``files`` has a pixel whose R, G, B differ
    (an RGB file of grey pixels is grey)."""
    from PIL import Image, UnidentifiedImageError

    step = max(1, len(files) / COLOUR_PROBES)
    for f in [files[int(i * step)] for i in range(min(len(files), COLOUR_PROBES))]:
        try:
            with Image.open(f) as im:
                rgb = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):  # the reader quarantines it
            continue
        if (rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any():
            return True
    return False


def folder_source(folder: Path, size: int | tuple[int, int] | None, channels: int | None = None) -> ImageSource:
    """A folder of PNGs; a subfolder per class names the label (``folder/<class>/*.png``).
    ``size`` / ``channels`` None: the folder's own (the module's rule); given: every image is
    read at that channel count, and one of another size is quarantined."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineError(f"{folder}: image folder not found; set data.path to a folder of PNGs")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() == ".png")
    if not files:
        raise PipelineError(f"{folder}: no .png files found; nothing to read")
    if size is None or channels is None:
        sizes, colour = _png_headers(files)
        if size is None:
            if not sizes:
                raise PipelineError(f"{folder}: none of its {len(files)} .png files can be read as an image")
            (w, h), _ = sizes.most_common(1)[0]
            size = _image_size(h, w, str(folder))
        if channels is None:
            channels = 3 if colour and _holds_colour(colour) else 1
    classes = tuple(sorted({p.parent.name for p in files if p.parent != folder}))
    units = []
    for i in range(0, len(files), UNIT_ROWS // 5):  # PNG decoding is slower per image
        chunk = files[i:i + UNIT_ROWS // 5]
        units.append({"kind": "png", "paths": [str(p.relative_to(folder)) for p in chunk], "root": str(folder),
                      "start": i, "hint": ""})
    return ImageSource(folder.name, "folder", tuple(files), size, classes, tuple(units), channels)


def _npz_layout(shape: tuple[int, ...], path: Path) -> tuple[tuple[int, int] | None, int, str]:
    """((H, W) or None for flat rows that are not square (H and W unknown), channels, layout) of an ``x`` array:
    layout "flat" (N, H*W), "hw" (N, H, W), "hwc" (N, H, W, C) or "chw" (N, C, H, W)."""
    if len(shape) == 2:
        s = math.isqrt(shape[1])
        return ((s, s) if s * s == shape[1] else None), 1, "flat"
    if len(shape) == 3:
        return (shape[1], shape[2]), 1, "hw"
    if len(shape) == 4 and shape[3] in (1, 3):
        return (shape[1], shape[2]), shape[3], "hwc"
    if len(shape) == 4 and shape[1] in (1, 3):
        return (shape[2], shape[3]), shape[1], "chw"
    raise PipelineError(f"{path}: x has shape {tuple(shape)}; save images as (N, H, W) or (N, H*W) grey, "
                        "or (N, H, W, 3) RGB")


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (H, W, c) -> (H, W, channels): grey repeated into R, G, B, or RGB to grey by the
    ITU-R 601 luma in PIL's integer arithmetic (so an .npz and a PNG give the same grey)."""
    c = img.shape[-1]
    if c == channels:
        return img
    if channels == 3:
        return np.repeat(img, 3, axis=-1)
    rgb = img.astype(np.uint32)
    grey = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return grey.astype(np.uint8)[..., None]


def npz_source(path: Path, size: int | tuple[int, int] | None, channels: int | None = None) -> ImageSource:
    """An .npz with ``x`` uint8 images ((N, H, W), (N, H*W), (N, H, W, 3): the module's rule) and
    optional ``y`` labels, ``classes``. ``size`` / ``channels`` None: the array's own."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: input file not found; set data.path to an existing .npz")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise PipelineError(f"{path}: no array named 'x' (found {z.files}); save images as x=, labels as y=")
            shape = z["x"].shape
            if len(shape) < 2:
                raise PipelineError(f"{path}: x has shape {shape}; save images as (N, H, W) or (N, H, W, 3)")
            n = int(shape[0])
            y = z["y"] if "y" in z.files else None
            classes = tuple(str(c) for c in z["classes"]) if "classes" in z.files else ()
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path}: not a readable .npz ({str(e)[:160]}); pass a numpy savez file") from None
    if not classes and y is not None and len(y):
        classes = tuple(str(i) for i in range(int(np.max(y)) + 1))  # labels only: bounded
    hw, c, _ = _npz_layout(shape, path)
    if size is None:
        if hw is None:
            raise PipelineError(f"{path}: x holds rows of {shape[1]} pixels, not a square image; save images as "
                                "(N, H, W) or (N, H, W, 3)")
        size = _image_size(hw[0], hw[1], str(path))
    units = [{"kind": "npz", "path": str(path), "start": s, "count": min(UNIT_ROWS, n - s), "hint": ""}
             for s in range(0, n, UNIT_ROWS)]
    return ImageSource(path.stem, "npz", (path,), size, classes, tuple(units), channels or c)


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
        return folder_source(Path(d.path), d.image_size)
    return npz_source(Path(d.path), d.image_size)


# ---------------------------------------------------------------------------------------------
# Decoding one unit (runs inside a Spark task; pure numpy/PIL so unit tests reach it directly)
# ---------------------------------------------------------------------------------------------
def _read_idx(unit: dict, size: int | tuple[int, int], num_classes: int) -> list[tuple]:
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
        if shape != image_hw(size):  # an idx record is (rows, columns)
            reason = f"wrong size: {_size_text(*shape)}, expected {_size_text(*image_hw(size))}"
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


def _read_png(unit: dict, size: int | tuple[int, int], classes: tuple[str, ...], channels: int = 1) -> list[tuple]:
    from PIL import Image, UnidentifiedImageError

    mode = "RGB" if channels == 3 else "L"
    height, width = image_hw(size)
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
                arr = np.asarray(im.convert(mode) if im.mode != mode else im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            rows.append((rel, unit["start"] + i, "", label, None, f"unreadable image: {str(e)[:160]}"))
            continue
        if (w, h) != (width, height):
            rows.append((rel, unit["start"] + i, "", label, None,
                         f"wrong size: {_size_text(h, w)}, expected {_size_text(height, width)}"))
            continue
        rows.append((rel, unit["start"] + i, "", label, arr.tobytes(), None))
    return rows


def _read_npz(unit: dict, size: int | tuple[int, int], num_classes: int, channels: int = 1) -> list[tuple]:
    path = Path(unit["path"])
    start, count = unit["start"], unit["count"]
    with np.load(path, allow_pickle=False) as z:
        x = z["x"][start:start + count]
        y = z["y"][start:start + count] if "y" in z.files else None
    hw, c, layout = _npz_layout(x.shape, path)
    if layout == "chw":
        x = np.moveaxis(x, 1, -1)
    shown = _size_text(*hw) if hw else "x".join(map(str, x.shape[1:]))
    want = image_hw(size)
    flat = x.reshape(len(x), -1)
    rows = []
    for i in range(len(x)):
        label = None if y is None else int(y[i])
        img = flat[i].astype(np.float64)
        if hw != want:
            reason = f"wrong size: {shown}, expected {_size_text(*want)}"
        elif not np.isfinite(img).all():
            reason = "corrupt: non-finite pixel values"
        elif img.min() < 0 or img.max() > PIXEL_MAX or (img != np.rint(img)).any():
            reason = f"corrupt: pixel values outside the integers 0..255 (min {img.min():g}, max {img.max():g})"
        elif label is not None and not 0 <= label < num_classes:
            reason = f"label {label} out of range (0..{num_classes - 1})"
        else:
            reason = None
        pixels = None if reason else to_channels(img.astype(np.uint8).reshape(*want, c), channels).tobytes()
        rows.append((path.name, start + i, "", label, pixels, reason))
    return rows


def decode_unit(unit: dict, size: int | tuple[int, int], classes: tuple[str, ...], channels: int = 1) -> list[tuple]:
    """(source, index, split hint, label, uint8 pixel bytes or None, reason or None) per image;
    the bytes row-major, ``channels`` per pixel (channels last); ``size``: S (S x S) or (H, W)."""
    if unit["kind"] == "idx":
        return _read_idx(unit, size, len(classes))
    if unit["kind"] == "png":
        return _read_png(unit, size, classes, channels)
    return _read_npz(unit, size, len(classes), channels)

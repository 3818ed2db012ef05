"""Image sets: read idx.gz / PNG folders / .npz on Spark, quarantine bad images, encode to Parquet.

Encoded layout (one ``features`` list<float32> per image, so both loaders hand torch a
``(B, H*W + K)`` tensor without changes): the H*W pixels scaled to [0, 1] (``pixel / 255``,
row-major), then the class label one-hot over K classes (all zeros when the image has none).
The spec (``transform_spec.json``, ``kind: image``) records the shape, the scaling and the
class names, so generate inverts it to uint8 pixels and score encodes raw images the same way.

Every raw image is a row: rows_in == rows_written + rows_quarantined (+ rows excluded from train
by ``data.train_where``, a Spark SQL condition on ``label``, + train rows left out by
``data.train_fraction``, a seeded share kept to train on small sets). A wrong-size, unreadable or
corrupt image goes to ``quarantine/`` with its source, index and reason.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gen_pipeline.config import PipelineConfig
from gen_pipeline.errors import PipelineError
from gen_pipeline.schema import Column
from gen_pipeline.storage import commit, staging_dir, write_json
from gen_pipeline.transforms import Span, TableTransformer

IMAGE_SPEC_VERSION = 1
PIXEL_MAX = 255.0  # every source is read as uint8 intensities; the model sees pixel / 255
UNIT_ROWS = 5_000  # images per Spark task
SPLITS = ("train", "validation", "test")
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
    from gen_pipeline import datasets

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


def is_image_dataset(dataset: str) -> bool:
    return dataset in ("fashion_mnist", "digits", "image_folder", "image_npz")


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


# ---------------------------------------------------------------------------------------------
# The spec and the transformer (the image counterpart of TableTransformer)
# ---------------------------------------------------------------------------------------------
class ImageSchema:
    """The generated/scored columns: ``image`` (H*W uint8 bytes, row-major) and ``label``."""

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
        self.size = int(spec["shape"][1])
        self.image_dim = self.size * self.size
        self.classes = list(spec["classes"])
        self.num_classes = len(self.classes)
        self.output_dim = self.image_dim + self.num_classes
        self.spans = [Span("image", 0, self.image_dim)]
        if self.num_classes:
            self.spans.append(Span("categorical", self.image_dim, self.output_dim))
        self.schema = ImageSchema(self.size)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.spec, indent=1))

    def encode(self, pixels: np.ndarray, labels) -> np.ndarray:
        """uint8 (N, H*W) + labels (N,) (None/-1 = unlabelled) -> float32 (N, H*W + K)."""
        out = np.zeros((len(pixels), self.output_dim), dtype=np.float32)
        out[:, :self.image_dim] = pixels.reshape(len(pixels), -1).astype(np.float32) / PIXEL_MAX
        if self.num_classes and labels is not None:
            lab = np.array([-1 if v is None or v != v else int(v) for v in labels], dtype=np.int64)
            ok = (lab >= 0) & (lab < self.num_classes)
            out[np.flatnonzero(ok), self.image_dim + lab[ok]] = 1.0
        return out

    def pixels(self, x: np.ndarray) -> np.ndarray:
        """Model output (N, D) -> uint8 images (N, H, W): the inverse of ``pixel / 255``."""
        return np.clip(np.rint(x[:, :self.image_dim] * PIXEL_MAX), 0, 255).astype(np.uint8).reshape(
            -1, self.size, self.size)

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
        """Rows with ``image`` (H*W uint8 bytes) and optional ``label`` -> features, reasons."""
        n = len(df)
        pix = np.zeros((n, self.image_dim), dtype=np.uint8)
        reasons: list[str | None] = [None] * n
        for i, b in enumerate(df["image"]):
            if b is None or len(b) != self.image_dim:
                msg = f"image: {0 if b is None else len(b)} bytes, expected {self.image_dim} ({self.size}x{self.size})"
                if strict:
                    raise PipelineError(f"row {i}: {msg}")
                reasons[i] = msg
            else:
                pix[i] = np.frombuffer(b, dtype=np.uint8)
        labels = df["label"].tolist() if "label" in df.columns else None
        return self.encode(pix, labels), reasons


def transformer_for(spec: dict):
    """The transformer a spec describes: images (``kind: image``) or tables."""
    return ImageTransformer(spec) if spec.get("kind") == "image" else TableTransformer(spec)


# ---------------------------------------------------------------------------------------------
# Preprocess (Spark)
# ---------------------------------------------------------------------------------------------
def run_image_preprocess(spark, source: ImageSource, cfg: PipelineConfig, out_dir: Path) -> dict:
    """Decode ``source`` on Spark into ``out_dir``: encoded/<split>, quarantine/, spec, manifest."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from gen_pipeline.preprocess import file_sha256, reconcile

    t0 = time.perf_counter()
    size, classes = source.size, source.classes
    spec = {"version": IMAGE_SPEC_VERSION, "kind": "image", "dataset": source.name,
            "shape": [1, size, size], "layout": "row-major pixels, then the label one-hot",
            "pixel_scale": {"encoded": "pixel / 255", "inverse": "clip(round(x * 255), 0, 255) as uint8",
                            "max": PIXEL_MAX},
            "classes": list(classes)}
    transformer = ImageTransformer(spec)
    units = [json.dumps(u) for u in source.units]

    def decode(batches):
        import pyarrow as pa

        schema = pa.schema([("source", pa.string()), ("index", pa.int64()), ("split_hint", pa.string()),
                            ("label", pa.int32()), ("pixels", pa.binary()), ("reason", pa.string())])
        for rb in batches:
            for u in rb.column(0).to_pylist():
                rows = decode_unit(json.loads(u), size, classes)
                yield pa.RecordBatch.from_arrays([pa.array(c, type=t) for c, t in
                                                  zip(zip(*rows), schema.types)], schema=schema)

    raw = spark.createDataFrame([(u,) for u in units], "unit string").repartition(max(1, len(units)))
    parsed = raw.mapInArrow(decode, RAW_DDL)
    # Split: an idx file's own train/test split wins (Fashion-MNIST's official test set); the rest by hash.
    u = F.pmod(F.xxhash64(F.lit(cfg.data.split_salt), F.col("source"), F.col("index")), F.lit(1_000_000)) / 1e6
    test, val = cfg.data.test_fraction, cfg.data.test_fraction + cfg.data.validation_fraction
    by_hash = F.when(u < test, "test").when(u < val, "validation").otherwise("train")
    in_train_file = F.when(u < cfg.data.validation_fraction, "validation").otherwise("train")
    split = F.when(F.col("split_hint") == "test", "test").when(F.col("split_hint") == "train", in_train_file) \
        .otherwise(by_hash)
    parsed = parsed.withColumn("split", split).persist(StorageLevel.MEMORY_AND_DISK)

    stage = staging_dir(out_dir)
    stats = parsed.groupBy("split", F.col("reason").isNull().alias("ok")).count().collect()
    rows_in = sum(r["count"] for r in stats)
    if rows_in == 0:
        raise PipelineError(f"{', '.join(str(f) for f in source.files)}: no images found (empty input?)")
    bad = parsed.filter(F.col("reason").isNotNull())
    bad.select("source", "index", "label", "reason").coalesce(1).write.mode("overwrite") \
        .parquet(str(stage / "quarantine"))
    reasons = bad.groupBy(F.regexp_extract("reason", r"^([^:(]*)", 1).alias("kind")).count().collect()
    good = parsed.filter(F.col("reason").isNull())
    excluded = 0
    if cfg.data.train_where:
        keep = (F.col("split") != "train") | F.expr(cfg.data.train_where)
        excluded = good.filter(~keep).count()
        good = good.filter(keep)
    dropped = 0
    if cfg.data.train_fraction < 1.0:
        # A seeded share of the train split, by its own hash of (source, index): independent of the
        # split's hash, and a smaller share keeps a subset of the images a larger one keeps.
        v = F.pmod(F.xxhash64(F.lit("fraction:" + cfg.data.split_salt), F.col("source"), F.col("index")),
                   F.lit(1_000_000)) / 1e6
        keep = (F.col("split") != "train") | (v < F.lit(cfg.data.train_fraction))
        dropped = good.filter(~keep).count()
        good = good.filter(keep)
    key = F.xxhash64(F.lit("order:" + cfg.data.split_salt), F.col("source"), F.col("index"))

    def encode(batches):
        import pyarrow as pa

        for rb in batches:
            n = rb.num_rows
            pix = np.frombuffer(b"".join(rb.column("pixels").to_pylist()), dtype=np.uint8).reshape(n, -1) \
                if n else np.zeros((0, transformer.image_dim), np.uint8)
            labels = rb.column("label").to_pylist()
            x = transformer.encode(pix, labels)
            values = pa.array(x.reshape(-1), type=pa.float32())
            offsets = pa.array(np.arange(0, x.size + 1, x.shape[1], dtype=np.int32))
            lab = pa.array([-1 if v is None else v for v in labels], type=pa.int32())
            yield pa.RecordBatch.from_arrays([pa.ListArray.from_arrays(offsets, values), lab],
                                             names=["features", "label"])

    split_rows, label_counts = {}, {}
    for s in SPLITS:
        part = good.filter(F.col("split") == s).withColumn("_key", key) \
            .repartition(cfg.data.num_files, "_key").sortWithinPartitions("_key")
        part.select("pixels", "label").mapInArrow(encode, "features array<float>, label int") \
            .write.mode("overwrite").option("parquet.block.size", 8 * 1024 * 1024).parquet(str(stage / "encoded" / s))
        counts = spark.read.parquet(str(stage / "encoded" / s)).groupBy("label").count().collect()
        split_rows[s] = sum(r["count"] for r in counts)
        label_counts[s] = {str(r["label"]): r["count"] for r in sorted(counts, key=lambda r: r["label"])}
    parsed.unpersist()

    rows_quarantined = sum(r["count"] for r in stats if not r["ok"])
    rows_written = sum(split_rows.values())
    reconcile(rows_in, rows_written, rows_quarantined, excluded + dropped)
    inputs = [{"path": str(f), "sha256": file_sha256(f), "bytes": f.stat().st_size}
              for f in source.files[:10_000]]
    config_json = json.dumps(cfg.model_dump(mode="json")["data"], sort_keys=True)
    fingerprint = hashlib.sha256("".join(i["sha256"] for i in inputs).encode() + config_json.encode()).hexdigest()
    manifest = {
        "dataset": source.name, "kind": "image", "inputs": inputs,
        "rows_in": rows_in, "rows_written": rows_written, "rows_quarantined": rows_quarantined,
        "rows_excluded": excluded, "excluded_by": cfg.data.train_where,
        "train_fraction": cfg.data.train_fraction, "rows_left_out_by_train_fraction": dropped,
        "splits": split_rows, "label_counts": label_counts,
        "quarantine_reasons": {r["kind"].strip(): r["count"] for r in reasons},
        "encoded_dim": transformer.output_dim, "image_shape": [1, size, size], "classes": list(classes),
        "fingerprint": fingerprint, "spec_version": IMAGE_SPEC_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    transformer.save(stage / "transform_spec.json")
    write_json(stage / "manifest.json", manifest)
    commit(stage, out_dir)
    print(f"[preprocess] images in={rows_in} written={rows_written} quarantined={rows_quarantined} "
          f"excluded from train={excluded} left out by train_fraction={dropped} splits={split_rows} "
          f"shape=1x{size}x{size} "
          f"classes={len(classes)} -> {out_dir}", flush=True)
    return manifest


def read_encoded(preprocess_dir: Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(features float32 (N, D), labels int (N,)) of one encoded split, read with pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(preprocess_dir) / "encoded" / split
    if not path.exists():
        raise PipelineError(f"{path}: not found; run `gen-pipeline preprocess` first")
    try:
        table = pq.read_table(path, columns=["features", "label"])
    except (pa.ArrowInvalid, OSError) as e:
        raise PipelineError(f"{path}: unreadable Parquet ({str(e).splitlines()[0][:160]}); "
                            "rerun `gen-pipeline preprocess` to rebuild it") from None
    if limit is not None:
        table = table.slice(0, limit)
    col = table.column("features").combine_chunks()
    n = len(col)
    if not n:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int32)
    x = col.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, -1)
    return x, table.column("label").to_numpy()

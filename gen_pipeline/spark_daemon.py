"""PySpark's Python worker daemon, with zip archives' import caches invalidated only on change.

``Runtime.spark`` names this module as ``spark.python.daemon.module``: Spark starts it instead of
``pyspark.daemon``, and every Python worker is forked from it, so the change below reaches every
task. Everything else is PySpark's own daemon.

The change: before each task, PySpark's worker calls ``importlib.invalidate_caches()`` (after
adding the task's files to ``sys.path``). On Python 3.10 and 3.11 that makes every zip archive on
``sys.path`` re-read its whole directory at once, in pure Python, and the workers always have
two: ``pyspark.zip`` (1,220 files) and py4j's: a fixed CPU cost per task, whatever the task
does (benchmarks/RESULTS.md, generate). CPython made
that invalidation lazy in 3.12 (gh-103200), and Spark later stopped calling it before every task
(SPARK-54744, after the 4.0 line we pin). Here an archive re-reads its directory only when its
size or modification time changed, which is what the call is for; a task's new ``--py-files``
archive is a new path, read when first used.
"""

from __future__ import annotations

import os
import sys
import zipimport


_STAMPS: dict[str, tuple[int, int] | None] = {}  # archive path -> (size, mtime) when its directory was last read
_PATCHED: list[bool] = []


def invalidate_zip_caches_on_change() -> None:
    """Make ``zipimporter.invalidate_caches`` re-read an archive only if the file changed."""
    if sys.version_info >= (3, 12) or _PATCHED:
        return
    reread = zipimport.zipimporter.invalidate_caches

    def invalidate_caches(self) -> None:
        try:
            st = os.stat(self.archive)
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:  # gone or unreadable: let zipimport decide, as before
            stamp = None
        key = f"{self.archive}\0{self.prefix}"
        if stamp is None or _STAMPS.get(key) != stamp:
            reread(self)
            _STAMPS[key] = stamp

    zipimport.zipimporter.invalidate_caches = invalidate_caches
    _PATCHED.append(True)


if __name__ == "__main__":
    invalidate_zip_caches_on_change()
    from pyspark.daemon import manager  # reads the worker module's name from sys.argv[1], as ever

    manager()

"""The worker daemon's zip import fix, without Spark: an unchanged archive is not re-read, a
changed one is, and what it adds can be imported."""

import importlib
import sys
import zipfile
import zipimport

import pytest

from gen_pipeline import spark_daemon
from gen_pipeline.spark_daemon import invalidate_zip_caches_on_change

pytestmark = pytest.mark.skipif(sys.version_info >= (3, 12), reason="Python 3.12+ invalidates zip caches lazily")


def test_a_zip_on_sys_path_is_reread_only_when_it_changed(tmp_path, monkeypatch):
    archive = tmp_path / "deps.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("gp_zip_first.py", "VALUE = 1\n")
    monkeypatch.syspath_prepend(str(archive))
    # Undo the patch after the test (monkeypatch restores what it saved).
    monkeypatch.setattr(zipimport.zipimporter, "invalidate_caches", zipimport.zipimporter.invalidate_caches)
    monkeypatch.setattr(spark_daemon, "_PATCHED", [])
    monkeypatch.setattr(spark_daemon, "_STAMPS", {})
    reads = []
    read_directory = zipimport._read_directory
    monkeypatch.setattr(zipimport, "_read_directory", lambda path: reads.append(path) or read_directory(path))

    assert importlib.import_module("gp_zip_first").VALUE == 1
    invalidate_zip_caches_on_change()
    importlib.invalidate_caches()  # the first call stamps the archive (one read)
    first = len(reads)
    for _ in range(5):
        importlib.invalidate_caches()  # what PySpark's worker calls before every task
    assert len(reads) == first, "an unchanged archive was read again"

    with zipfile.ZipFile(archive, "a") as z:  # the archive changes: size and mtime
        z.writestr("gp_zip_second.py", "VALUE = 2\n")
    importlib.invalidate_caches()
    assert len(reads) == first + 1
    assert importlib.import_module("gp_zip_second").VALUE == 2
    for name in ("gp_zip_first", "gp_zip_second"):
        sys.modules.pop(name, None)

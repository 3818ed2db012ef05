"""Run a benchmark's child command and sample its peak resident memory, 10 times a second: the
process itself (the Python driver), its java children (Spark's JVM) and its other Python children
(Spark's Python workers)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import psutil


def run_monitored(cmd: list[str], cwd, env: dict | None = None) -> dict:
    """Run ``cmd``; exit with its last output if it fails. Returns the wall seconds, the three
    peaks in MB and the command's output (``log``)."""
    peak = {"driver_peak_rss_mb": 0.0, "jvm_peak_rss_mb": 0.0, "python_workers_peak_rss_mb": 0.0}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = threading.Event()

    def sample():
        p = psutil.Process(proc.pid)
        while not done.wait(0.1):
            try:
                peak["driver_peak_rss_mb"] = max(peak["driver_peak_rss_mb"], p.memory_info().rss / 2**20)
                kids = p.children(recursive=True)
                jvm = sum(c.memory_info().rss for c in kids if "java" in c.name())
                workers = sum(c.memory_info().rss for c in kids if "python" in c.name())
                peak["jvm_peak_rss_mb"] = max(peak["jvm_peak_rss_mb"], jvm / 2**20)
                peak["python_workers_peak_rss_mb"] = max(peak["python_workers_peak_rss_mb"], workers / 2**20)
            except psutil.Error:
                pass

    threading.Thread(target=sample, daemon=True).start()
    out, _ = proc.communicate()
    done.set()
    if proc.returncode != 0:
        sys.exit(f"command failed: {' '.join(map(str, cmd))}\n{out[-4000:]}")
    return {"wall_s": round(time.perf_counter() - t0, 2), **{k: round(v, 1) for k, v in peak.items()}, "log": out}

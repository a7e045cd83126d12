"""Metrics across workers: prometheus_client's multiprocess mode.

With several workers, `serve` creates an empty directory and turns the mode on before the workers
start; each worker's counters and histograms then live in files there (one per process), and a
scrape of any worker sums them all. The directory is removed when `serve` ends."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from prometheus_client import multiprocess, values

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_directory() -> str | None:
    return os.environ.get(ENVIRONMENT)


def enable() -> Path:
    """A fresh directory for the workers' metrics, with the mode turned on for metrics made from
    now on (prometheus_client chooses how values are kept when it is imported; it is chosen again
    here, the way it does it, since the gateway's modules are imported before the mode is known)."""
    directory = Path(tempfile.mkdtemp(prefix="tiergate-metrics-"))
    os.environ[ENVIRONMENT] = str(directory)
    values.ValueClass = values.get_value_class()
    return directory


def worker_stopped(pid: int) -> None:
    """A worker is gone: its live gauges no longer count (its counters do)."""
    if multiprocess_directory() is not None:
        multiprocess.mark_process_dead(pid)


def disable(directory: Path) -> None:
    os.environ.pop(ENVIRONMENT, None)
    values.ValueClass = values.get_value_class()
    shutil.rmtree(directory, ignore_errors=True)

"""The text `/metrics` answers with, and the directory that makes it one set for the
workers of `mirror serve --workers N`.

Workers keep their values in files of a directory private to their serve (prometheus_client's
multiprocess mode, chosen by `PROMETHEUS_MULTIPROC_DIR` in the environment they inherit), so
any worker answering a scrape reports the sums over all of them. The parent creates the
directory, marks the files of workers that ended, and removes it at exit.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from mirror.metrics import series

SHARED_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format, which every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def shared_directory() -> str | None:
    """The directory this process shares its values through, if it is one of several."""
    return os.environ.get(SHARED_DIR_ENV) or None


def metrics_text() -> bytes:
    """Every series: this process's own, or the combined values of every worker."""
    directory = shared_directory()
    if directory is None:
        return generate_latest(series.REGISTRY)
    combined = CollectorRegistry()
    MultiProcessCollector(combined, path=directory)
    return generate_latest(combined)


def create_workers_directory(index_dir: Path) -> Path:
    """`<index_dir>/metrics/<pid>` for the workers this process starts, empty, and set in
    the environment they inherit. Node-local, like the index. Directories of serves that
    ended without removing theirs (SIGKILL) are removed."""
    parent = index_dir / "metrics"
    parent.mkdir(parents=True, exist_ok=True)
    for entry in parent.iterdir():
        if entry.name.isdigit() and not _running(int(entry.name)):
            shutil.rmtree(entry, ignore_errors=True)
    directory = parent / str(os.getpid())
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    os.environ[SHARED_DIR_ENV] = str(directory)
    return directory


def remove_workers_directory(directory: Path) -> None:
    """Once every worker ended: their values go with them."""
    os.environ.pop(SHARED_DIR_ENV, None)
    shutil.rmtree(directory, ignore_errors=True)


def worker_ended(directory: Path, pid: int) -> None:
    """Drop the gauges of a worker that ended (those that count live workers only); its
    counters and histograms stay in the sums, as counters must."""
    mark_process_dead(pid, str(directory))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True

"""What both benchmark scripts share: the repository root, progress lines, the error for a
measurement that could not be taken, and one temp directory per run."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
GIB = 1 << 30


class BenchError(RuntimeError):
    """A measurement could not be taken (a server failed, a response was wrong)."""


def log(message: str) -> None:
    """One timestamped progress line, flushed at once: runs take minutes."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@contextlib.contextmanager
def run_directory(parent: Path | None, prefix: str, keep: bool) -> Iterator[Path]:
    """A new temp directory for one run under `parent` (default: the system temp dir),
    removed when the run ends unless `keep`."""
    parent = parent or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield workdir
    finally:
        if keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

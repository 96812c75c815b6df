"""Directories on the cluster filesystem, which several nodes make at the same moment."""

from __future__ import annotations

import os
import time
from pathlib import Path

_ATTEMPTS = 10
_PAUSE_SECONDS = 0.05  # grows by this much each attempt: about 2 s in all


def make_dirs(path: Path) -> None:
    """`mkdir -p`, also while another node makes the same directories. On GlusterFS (seen
    in the two-node tests) `mkdir` can answer "exists" for a directory another node made a
    moment ago while a lookup of it still answers "no such file", so a plain `mkdir -p`
    fails; the two agree within moments, so this tries again a few times. A path taken
    by a file, or a parent removed each time, still raises after the last attempt."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            os.makedirs(path, exist_ok=True)
            return
        except (FileExistsError, FileNotFoundError):
            if attempt == _ATTEMPTS:
                raise
            time.sleep(_PAUSE_SECONDS * attempt)


def rename_into(source: Path, target: Path) -> None:
    """Rename `source` to `target`, making `target`'s directory first. A directory another
    node made a moment ago can pass `make_dirs` here and still be "no such file" to the
    rename (GlusterFS, seen in the same tests), so that is tried again too, while `source`
    is still there."""
    for attempt in range(1, _ATTEMPTS + 1):
        make_dirs(target.parent)
        try:
            os.rename(source, target)
            return
        except FileNotFoundError:
            if attempt == _ATTEMPTS or not os.path.lexists(source):
                raise
            time.sleep(_PAUSE_SECONDS * attempt)

"""The store's filesystem refusing writes (full, over quota, failing): recognise it, say so
in one clear log line, and say when it takes writes again.

A refused write never fails a pull: the proxy serves the content uncached and its metadata
unrecorded. What an operator needs is which filesystem refused and why, once, not a line
per request: the first refusal is logged, later ones at most once a minute with a count.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeGuard

from mirror.errors import StoreRefused

log = logging.getLogger(__name__)

# EROFS: what a filesystem remounted read-only after I/O errors answers from then on.
REFUSAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})
_REPEAT_SECONDS = 60.0


def is_refusal(exc: BaseException) -> TypeGuard[OSError]:
    """Whether `exc` is the store's filesystem refusing a write, not a bug or a missing file."""
    return isinstance(exc, OSError) and exc.errno in REFUSAL_ERRNOS


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding `path` (where a full disk is fixed)."""
    path = path.resolve()
    device = os.stat(path).st_dev
    while path.parent != path and os.stat(path.parent).st_dev == device:
        path = path.parent
    return path


@contextmanager
def raising_store_refused() -> Iterator[None]:
    """Turn the filesystem refusing a write into `StoreRefused` (for callers that serve the
    content uncached instead); any other error propagates as it is."""
    try:
        yield
    except OSError as exc:
        if not is_refusal(exc):
            raise
        raise StoreRefused(exc) from exc


class StoreRefusals:
    """Says that the store at `root` refuses writes, and later that it takes them again:
    at most one line of each a minute, however often a nearly full disk flips between."""

    def __init__(self, root: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self._root = root
        self._clock = clock
        self._logged_at = -_REPEAT_SECONDS  # when a refusal was last logged
        self._unlogged = 0  # refusals since then
        self._announced = False  # a refusal was logged, and no recovery since

    def refused(self, exc: OSError, what: str) -> None:
        """A write of `what` was refused with `exc`: log it, unless that was said lately."""
        now = self._clock()
        if now - self._logged_at < _REPEAT_SECONDS:
            self._unlogged += 1
            return
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        since = f" ({self._unlogged} more refused since the last line)" if self._unlogged else ""
        log.warning(
            "cache store %s (filesystem mounted at %s) refuses writes: %s, %s, writing %s%s; "
            "pulls are served from the upstream without being cached until it takes writes again",
            self._root,
            self._mount_point(),
            name,
            exc.strerror,
            exc.filename or what,
            since,
        )
        self._logged_at, self._unlogged, self._announced = now, 0, True

    def accepted(self) -> None:
        """Content was stored: if a refusal was logged, say that writes succeed again."""
        if self._announced:
            self._announced = False
            log.info("cache store %s takes writes again: misses are cached again", self._root)

    @contextmanager
    def raising(self, what: str) -> Iterator[None]:
        """Run a write the caller cannot do without (a fill's claim): a refusal is logged and
        raised as `StoreRefused`, so the caller serves uncached; any other error propagates."""
        try:
            with raising_store_refused():
                yield
        except StoreRefused as exc:
            self.refused(exc.cause, what)
            raise

    @contextmanager
    def tolerated(self, what: str) -> Iterator[None]:
        """Run a write the pull does not depend on (a link, a tag record, statistics):
        a refusal is logged and skipped; any other error propagates."""
        try:
            yield
        except OSError as exc:
            if not is_refusal(exc):
                raise
            self.refused(exc, what)

    def _mount_point(self) -> Path | str:
        try:
            return mount_point(self._root)
        except OSError:
            return "?"

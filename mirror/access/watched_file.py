"""A small text file the mirror reads again when it changes: the htpasswd and groups files.

Sites edit these files while the mirror runs (`htpasswd -B`, a configuration manager), so
the file is looked at (one `stat`) at most once per `interval` and parsed again when its
inode, size or modification time moved. A file that vanishes or cannot be read keeps the
last content read, with one log line per new problem, so a botched edit locks nobody out.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class WatchedFile(Generic[T]):
    """The parsed content of `path`; `parse` turns its text into a value (and logs the
    lines it skips, by number, never their text)."""

    def __init__(
        self,
        path: Path,
        parse: Callable[[str], T],
        empty: T,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._parse = parse
        self._value = empty
        self._interval = interval
        self._clock = clock
        self._checked_at: float | None = None
        self._signature: tuple[int, int, int] | None = None
        self._problem: str | None = None
        self.current()  # read at start, so a wrong path is logged before the first login

    def current(self) -> T:
        """The content as of the last look, looking again if `interval` has passed."""
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < self._interval:
            return self._value
        self._checked_at = now
        try:
            status = os.stat(self.path)
            signature = (status.st_ino, status.st_size, status.st_mtime_ns)
            if signature != self._signature:
                text = self.path.read_text(encoding="utf-8")
                # A write that lands while the file is read changes the signature again,
                # so the next look reads it once more.
                self._value = self._parse(text)
                self._signature = signature
                log.info("read %s", self.path)
        except OSError as exc:
            self._report(f"cannot read {self.path}: {exc.strerror}")
            return self._value
        except UnicodeDecodeError:
            self._report(f"{self.path} is not UTF-8 text")
            return self._value
        if self._problem is not None:
            log.warning("%s is readable again", self.path)
            self._problem = None
        return self._value

    def _report(self, problem: str) -> None:
        if problem != self._problem:
            kept = "keeping what was read before" if self._signature else "nothing read yet"
            log.error("%s; %s", problem, kept)
        self._problem = problem

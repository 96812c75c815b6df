"""Warnings for conditions that come in floods (no file descriptors left, malformed
requests): a flood costs a few lines, each counting the occurrences it stands for."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

Schedule = Callable[[float, Callable[[], None]], object]


def _on_running_loop(delay: float, callback: Callable[[], None]) -> None:
    try:
        asyncio.get_running_loop().call_later(delay, callback)
    except RuntimeError:  # no loop: the count waits for the next occurrence
        pass


class ThrottledWarning:
    """Logs the first occurrence at once, then at most one line per pause: the last one
    left out, with how many more it stands for, when the pause ends. The pause doubles
    while occurrences keep coming (up to `longest_pause`) and starts again from
    `first_pause` after one with none. Clock and timer are injectable for tests."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        first_pause: float = 1.0,
        longest_pause: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        schedule: Schedule = _on_running_loop,
    ) -> None:
        self._logger = logger
        self._first_pause = first_pause
        self._longest_pause = longest_pause
        self._clock = clock
        self._schedule = schedule
        self._pause = first_pause
        self._next_at = float("-inf")
        self._latest: tuple[str, tuple[object, ...]] = ("", ())  # the last one left out
        self._count = 0  # left out since the last line

    def __call__(self, message: str, *args: object) -> None:
        now = self._clock()
        if now >= self._next_at and not self._count:
            self._pause = self._first_pause
            self._log(now, message, args)
            return
        self._count += 1
        self._latest = (message, args)
        if now >= self._next_at:  # the timer did not run (yet): this call logs the count
            self._flush()
        elif self._count == 1:
            self._schedule(self._next_at - now, self._flush)

    def _flush(self) -> None:
        if not self._count:
            return
        message, args = self._latest
        if self._count > 1:
            message += " (and %d more like it)"
            args = (*args, self._count - 1)
        self._count = 0
        self._pause = min(self._pause * 2, self._longest_pause)
        self._log(self._clock(), message, args)

    def _log(self, now: float, message: str, args: tuple[object, ...]) -> None:
        self._logger.warning(message, *args)
        self._next_at = now + self._pause

"""What both benchmark scripts need to stop by themselves: a whole-run time limit and a
clean stop on SIGTERM, both raised as exceptions so every cleanup block still runs."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any


class Timeout(BaseException):
    """The whole run exceeded --timeout (BaseException so no handler swallows it)."""


def install(timeout: float) -> None:
    """Raise Timeout after `timeout` seconds and KeyboardInterrupt on SIGTERM."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise Timeout(f"benchmark exceeded --timeout {timeout:.0f} s")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(max(1, int(timeout)))


@contextlib.contextmanager
def limit(timeout: float) -> Iterator[None]:
    """`install` for the block; the alarm is cancelled on leaving it, so the cleanup and
    the report that follow are not cut short."""
    install(timeout)
    try:
        yield
    finally:
        signal.alarm(0)

"""A flood of one warning costs a few lines that count what they stand for."""

from __future__ import annotations

import logging

from mirror.proxy.throttled_log import ThrottledWarning


class _Timer:
    """A clock the test moves, and the callbacks scheduled on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.due: list[tuple[float, object]] = []

    def schedule(self, delay: float, callback) -> None:
        self.due.append((self.now + delay, callback))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for when, callback in sorted(self.due, key=lambda item: item[0]):
            if when <= self.now:
                self.due.remove((when, callback))
                callback()


def _throttled(caplog, timer: _Timer, schedule=None) -> ThrottledWarning:
    caplog.set_level(logging.WARNING, logger="test.flood")
    return ThrottledWarning(
        logging.getLogger("test.flood"),
        first_pause=1,
        longest_pause=8,
        clock=lambda: timer.now,
        schedule=schedule or timer.schedule,
    )


def test_a_flood_is_a_few_lines_with_growing_pauses(caplog):
    timer = _Timer()
    warn = _throttled(caplog, timer)
    for _ in range(60):  # ten per tenth of a second for six seconds
        for n in range(10):
            warn("out of files (%d)", n)
        timer.advance(0.1)
    timer.advance(10)
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "out of files (0)"
    assert all(line.startswith("out of files (9) (and ") for line in lines[1:])
    counted = sum(
        1 + int(line.split("(and ")[1].split()[0]) if "(and" in line else 1 for line in lines
    )
    assert counted == 600
    assert len(lines) == 4  # at 0 s, then after pauses of 1, 2 and 4 s (and the rest at 7 s)


def test_after_a_quiet_spell_the_first_occurrence_is_logged_at_once(caplog):
    timer = _Timer()
    warn = _throttled(caplog, timer)
    warn("a")
    warn("b")
    timer.advance(1)  # the pause ends: "b" is logged
    timer.advance(30)
    warn("c")
    assert [r.getMessage() for r in caplog.records] == ["a", "b", "c"]


def test_without_a_timer_the_next_occurrence_carries_the_count(caplog):
    timer = _Timer()
    warn = _throttled(caplog, timer, schedule=lambda delay, callback: None)
    warn("x")
    warn("x")
    warn("x")
    timer.now = 5
    warn("y")
    assert [r.getMessage() for r in caplog.records] == ["x", "y (and 2 more like it)"]

"""Sizes and durations as people write and read them."""

from __future__ import annotations

import re

from mirror.errors import InvalidValue

_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(i?B?)\s*", re.IGNORECASE)
# The unit is required: a bare "30" read as seconds evicted what "30 days" meant to keep.
_AGE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw])\s*", re.IGNORECASE)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(text: str) -> int:
    """'500G', '1.5TiB', '100MB', '4096' -> bytes. Binary multiples (a G is 2**30), as
    df -h and du -h mean them."""
    match = _SIZE_RE.fullmatch(text)
    if not match:
        raise InvalidValue(f"not a size: {text!r} (write e.g. 500G or 1.5TiB)")
    number, prefix = float(match.group(1)), match.group(2).upper()
    return int(number * 1024 ** "_KMGTP".index(prefix or "_"))


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '3600s' -> seconds; a number without its unit is refused."""
    match = _AGE_RE.fullmatch(text)
    if not match:
        raise InvalidValue(
            f"not an age: {text!r} (write a number and its unit: 30d, 12h, 90m or 3600s)"
        )
    return float(match.group(1)) * _AGE_UNITS[match.group(2).lower()]


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"

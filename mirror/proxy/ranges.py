"""HTTP byte ranges of blob requests (RFC 9110, one range per request)."""

from __future__ import annotations

import re

# One byte range; positions are ASCII digits only (str.isdigit() takes any script's).
_BYTE_RANGE = re.compile(r"\s*bytes\s*=\s*([0-9]*)-([0-9]*)\s*", re.IGNORECASE | re.ASCII)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse a single `bytes=` range against a blob of `size` bytes.

    Returns (start, end_exclusive); None means the header is unsatisfiable or malformed
    (the caller answers 416). Multiple ranges are refused rather than half-supported.
    """
    match = _BYTE_RANGE.fullmatch(header)
    if match is None:
        return None
    first, last = match.groups()
    try:
        if not first:
            suffix = int(last or "0")
            return (max(size - suffix, 0), size) if suffix > 0 and size > 0 else None
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:  # more digits than int() converts: no blob is that large
        return None
    if start >= size or end <= start:
        return None
    return start, min(end, size)


def content_range(start: int, end: int, size: int) -> str:
    """The Content-Range of a 206 answer for bytes [start, end) of a `size`-byte blob."""
    return f"bytes {start}-{end - 1}/{size}"

"""HTTP byte ranges of blob requests and of upstream responses (RFC 9110, one range each)."""

from __future__ import annotations

import re

# One byte range; positions are ASCII digits only (str.isdigit() takes any script's).
_BYTE_RANGE = re.compile(r"\s*bytes\s*=\s*([0-9]*)-([0-9]*)\s*", re.IGNORECASE | re.ASCII)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)", re.ASCII | re.IGNORECASE)


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


def parse_content_range(header: str) -> tuple[int, int, int] | None:
    """Parse a response's `Content-Range: bytes a-b/size` into (a, b + 1, size); None for
    anything else (an unknown size `*` included)."""
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if match is None:
        return None
    start, end, size = int(match[1]), int(match[2]) + 1, int(match[3])
    return (start, end, size) if start < end <= size else None


def content_range(start: int, end: int, size: int) -> str:
    """The Content-Range of a 206 answer for bytes [start, end) of a `size`-byte blob."""
    return f"bytes {start}-{end - 1}/{size}"

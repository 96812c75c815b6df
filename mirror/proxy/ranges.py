"""HTTP byte ranges of blob requests and of upstream responses (RFC 9110, one range each)."""

from __future__ import annotations

import re

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)", re.ASCII | re.IGNORECASE)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse a single `bytes=` range against a blob of `size` bytes.

    Returns (start, end_exclusive); None means the header is unsatisfiable or malformed
    (the caller answers 416). Multiple ranges are refused rather than half-supported.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0 or not last.isdigit():
                return None
            return (max(size - suffix, 0), size) if size > 0 else None
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if not first.isdigit() or (last and not last.isdigit()):
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

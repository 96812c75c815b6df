"""HTTP byte ranges of blob requests (RFC 9110, one range per request)."""

from __future__ import annotations


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

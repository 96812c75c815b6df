"""Dates as SIF metadata writes them: RFC 3339 labels, and label-schema's build date in the
builder's local zone abbreviation."""

from __future__ import annotations

import datetime as dt
import re

UTC = dt.timezone.utc
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
# org.label-schema.build-date carries the *builder's local* zone abbreviation (Go Time.Zone).
_ZONES = {
    "UTC": 0,
    "GMT": 0,
    "UCT": 0,
    "Z": 0,
    "WET": 0,
    "WEST": 1,
    "CET": 1,
    "CEST": 2,
    "EET": 2,
    "EEST": 3,
    "MSK": 3,
    "EST": -5,
    "EDT": -4,
    "CDT": -5,
    "MST": -7,
    "MDT": -6,
    "PST": -8,
    "PDT": -7,
    "AKST": -9,
    "AKDT": -8,
    "HST": -10,
    "JST": 9,
    "KST": 9,
    "AEST": 10,
    "AEDT": 11,
    "NZST": 12,
    "NZDT": 13,
}
_BUILD_DATE = re.compile(
    r"[A-Za-z]+_(\d{1,2})_([A-Za-z]+)_(\d{4})_(\d{1,2}):(\d{1,2}):"
    r"(\d{1,2})_([A-Za-z]+|[+-]\d\d(?:\d\d)?)"
)


def parse_iso(text: str | None) -> dt.datetime | None:
    """RFC 3339 (``org.opencontainers.image.created``) to UTC; naive means UTC."""
    try:
        when = dt.datetime.fromisoformat(text)  # type: ignore[arg-type]
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def parse_build_date(text: str | None) -> dt.datetime | None:
    """label-schema's ``Thursday_24_October_2024_10:32:1UTC`` to UTC.

    The zone is the builder's local abbreviation, or ``+03`` style for zones without one;
    an abbreviation not in ``_ZONES`` gives None rather than a time hours off.
    """
    match = _BUILD_DATE.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match or match[2].capitalize() not in _MONTHS:
        return None
    day, month, year, hour, minute, second, zone = match.groups()
    offset = (
        int(zone[:3]) + int(zone[0] + (zone[3:] or "0")) / 60
        if zone[0] in "+-"
        else _ZONES.get(zone.upper())
    )
    if offset is None:
        return None
    try:
        return dt.datetime(
            int(year),
            _MONTHS.index(month.capitalize()) + 1,
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=dt.timezone(dt.timedelta(hours=offset)),
        ).astimezone(UTC)
    except (ValueError, OverflowError):
        return None

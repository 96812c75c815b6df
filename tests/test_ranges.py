import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror.proxy.ranges import content_range, parse_content_range, parse_range


@pytest.mark.parametrize(
    "header,size,expected",
    [
        ("bytes=0-9", 100, (0, 10)),
        ("bytes=90-", 100, (90, 100)),
        ("bytes=-10", 100, (90, 100)),
        ("bytes=-1000", 100, (0, 100)),
        ("bytes=50-1000", 100, (50, 100)),
        ("bytes=100-", 100, None),
        ("bytes=10-5", 100, None),
        ("bytes=0-1,5-6", 100, None),
        ("items=0-1", 100, None),
        ("bytes=a-b", 100, None),
        ("bytes=-0", 100, None),
        ("bytes=0-0", 0, None),
        ("bytes=+1-5", 100, None),
    ],
)
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    "header,expected",
    [
        ("bytes 0-9/100", (0, 10, 100)),
        ("bytes 90-99/100", (90, 100, 100)),
        ("BYTES 5-5/6", (5, 6, 6)),
        ("bytes 90-99/*", None),
        ("bytes */100", None),
        ("bytes 10-5/100", None),
        ("bytes 0-100/100", None),
        ("bytes 0-9", None),
        ("items 0-9/100", None),
        ("bytes ٠-9/100", None),
        ("", None),
    ],
)
def test_parse_content_range(header, expected):
    assert parse_content_range(header) == expected


# Property-based: any header gives a range inside the blob or None (answered 416), and a
# range round-trips through the Content-Range the handler writes.

SIZES = st.integers(min_value=0, max_value=2**40)
POSITIONS = st.one_of(
    st.just(""),
    st.integers(0, 2**41).map(str),
    st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=3),  # other digits
    st.text(max_size=6),
)
RANGE_LIKE = st.builds(
    lambda unit, first, last: f"{unit}={first}-{last}",
    st.sampled_from(["bytes", "BYTES", " bytes ", "items", ""]),
    POSITIONS,
    POSITIONS,
)
RFC_RANGE = re.compile(r"\s*bytes\s*=\s*([0-9]*)-([0-9]*)\s*", re.IGNORECASE | re.ASCII)


@given(st.one_of(st.text(), RANGE_LIKE), SIZES)
def test_any_header_is_a_range_inside_the_blob_or_none(header, size):
    bounds = parse_range(header, size)
    if bounds is not None:
        start, end = bounds
        assert 0 <= start < end <= size
        assert RFC_RANGE.fullmatch(header), "accepted something RFC 9110 does not"


@given(SIZES.filter(lambda size: size > 0), st.data())
def test_a_range_round_trips_through_content_range(size, data):
    start = data.draw(st.integers(0, size - 1))
    last = data.draw(st.integers(start, size + 10))
    bounds = parse_range(f"bytes={start}-{last}", size)
    assert bounds == (start, min(last + 1, size))
    header = content_range(*bounds, size)
    assert header == f"bytes {start}-{bounds[1] - 1}/{size}"
    first_last, total = header.removeprefix("bytes ").split("/")
    assert parse_range(f"bytes={first_last}", int(total)) == bounds


@pytest.mark.parametrize(
    "header",
    [
        "bytes=٠-٩",  # found by hypothesis: Arabic-Indic digits passed str.isdigit()
        "bytes=-٥",
        "bytes=1_0-20",
        "bytes=" + "9" * 5000 + "-",  # longer than int() converts
    ],
)
def test_only_ascii_digits_make_a_range(header):
    assert parse_range(header, 100) is None

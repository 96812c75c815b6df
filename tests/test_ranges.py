import pytest

from mirror.proxy.ranges import parse_content_range, parse_range


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

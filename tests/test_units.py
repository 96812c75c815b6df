import pytest

from mirror.units import human_size, parse_age, parse_size


@pytest.mark.parametrize(
    "text,expected",
    [
        ("4096", 4096),
        ("1K", 1024),
        ("1.5G", 3 << 29),
        ("500GiB", 500 << 30),
        ("2TB", 2 << 40),
        ("10 m", 10 << 20),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [("3600s", 3600), ("90m", 5400), ("12h", 43200), ("30d", 2592000), ("1w", 604800)],
)
def test_parse_age(text, expected):
    assert parse_age(text) == expected


@pytest.mark.parametrize("bad", ["", "G", "-1G", "1X", "ten"])
def test_bad_sizes_and_ages(bad):
    with pytest.raises(ValueError):
        parse_size(bad)
    with pytest.raises(ValueError):
        parse_age(bad)


def test_an_age_needs_its_unit():
    with pytest.raises(ValueError, match="a number and its unit"):
        parse_age("30")


def test_human_size():
    assert [human_size(n) for n in (None, 0, 1023, 1024, 3 << 30)] == [
        "?",
        "0 B",
        "1023 B",
        "1.0 KiB",
        "3.0 GiB",
    ]

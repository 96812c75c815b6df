import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror.errors import DigestInvalid, NameInvalid, TagInvalid
from mirror.reference import Digest, ImageRef, check_name, check_tag, is_digest

HEX = "a" * 64


@pytest.mark.parametrize(
    "name", ["alpine", "library/alpine", "a/b/c", "my-org/tool_x", "a.b/c__d", "x" * 255]
)
def test_valid_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "..",
        "a/../b",
        "../etc",
        "a/./b",
        "/a",
        "a/",
        "A/b",
        "a//b",
        "-a",
        "a-",
        "a/_b",
        "a b",
        "a\x00b",
        "x" * 256,
        "a/%2e%2e/b",
    ],
)
def test_invalid_names(name):
    with pytest.raises(NameInvalid):
        check_name(name)


def test_digest_parse_and_format():
    assert str(Digest.parse(f"sha256:{HEX}")) == f"sha256:{HEX}"
    assert is_digest(f"sha256:{HEX}") and not is_digest("latest")


@pytest.mark.parametrize(
    "text",
    [
        "sha256:" + "A" * 64,
        "sha256:abc",
        "sha256:" + HEX + "0",
        "sha256:../../etc/passwd",
        "md5:abc",
        HEX,
        "sha512:" + HEX,
    ],
)
def test_bad_digests(text):
    with pytest.raises(DigestInvalid):
        Digest.parse(text)


@pytest.mark.parametrize("tag", ["", ".hidden", "-x", "a/b", "x" * 129, "a..b/"])
def test_bad_tags(tag):
    with pytest.raises(TagInvalid):
        check_tag(tag)


@pytest.mark.parametrize(
    "text,path,reference",
    [
        ("alpine", "alpine", "latest"),
        (" up.test/tools/alpha:1.0 ", "up.test/tools/alpha", "1.0"),
        ("localhost:5000/app", "localhost:5000/app", "latest"),
        ("localhost:5000/app:2", "localhost:5000/app", "2"),
        (f"app@sha256:{HEX}", "app", f"sha256:{HEX}"),
    ],
)
def test_image_ref_parse(text, path, reference):
    assert ImageRef.parse(text) == ImageRef(path, reference)


# Property-based: whatever a client sends, these either return their input or raise the
# module's own error, and what they accept can never name a path outside its directory.

COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAMES = st.from_regex(rf"\A{COMPONENT}(?:/{COMPONENT}){{0,4}}\Z").filter(lambda n: len(n) <= 255)
HOSTILE = st.text(alphabet=st.sampled_from("ab/._-:%@\x00\n A\\"), max_size=40) | st.text()


@given(NAMES)
def test_every_grammatical_name_is_accepted(name):
    assert check_name(name) == name


@given(HOSTILE)
def test_any_text_is_a_name_or_name_invalid(text):
    try:
        name = check_name(text)
    except NameInvalid:
        return
    parts = name.split("/")
    assert name == text and len(name) <= 255
    assert all(
        part and part not in (".", "..") and not part.startswith(("_", ".", "-")) for part in parts
    )


@given(st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z"))
def test_every_grammatical_tag_is_accepted(tag):
    assert check_tag(tag) == tag


@given(HOSTILE)
def test_any_text_is_a_tag_or_tag_invalid(text):
    try:
        tag = check_tag(text)
    except TagInvalid:
        return
    assert tag == text and "/" not in tag and not tag.startswith(".") and len(tag) <= 128


@given(st.from_regex(r"\A[a-f0-9]{64}\Z"))
def test_digests_round_trip(hex_digest):
    assert str(Digest.parse(f"sha256:{hex_digest}")) == f"sha256:{hex_digest}"
    assert Digest.parse(f"sha256:{hex_digest}").hex == hex_digest


@given(HOSTILE | st.builds(lambda s: "sha256:" + s, HOSTILE))
def test_any_text_is_a_digest_or_digest_invalid(text):
    try:
        digest = Digest.parse(text)
    except DigestInvalid:
        return
    assert str(digest) == text and len(digest.hex) == 64

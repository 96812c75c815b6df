import pytest

from mirror.errors import DigestInvalid, NameInvalid, TagInvalid
from mirror.reference import Digest, ImageRef, check_name, check_tag, is_digest

HEX = "a" * 64


@pytest.mark.parametrize("name", ["alpine", "library/alpine", "a/b/c", "my-org/tool_x",
                                  "a.b/c__d", "x" * 255])
def test_valid_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "..", "a/../b", "../etc", "a/./b", "/a", "a/", "A/b",
                                  "a//b", "-a", "a-", "a/_b", "a b", "a\x00b", "x" * 256,
                                  "a/%2e%2e/b"])
def test_invalid_names(name):
    with pytest.raises(NameInvalid):
        check_name(name)


def test_digest_parse_and_format():
    assert str(Digest.parse(f"sha256:{HEX}")) == f"sha256:{HEX}"
    assert is_digest(f"sha256:{HEX}") and not is_digest("latest")


@pytest.mark.parametrize("text", ["sha256:" + "A" * 64, "sha256:abc", "sha256:" + HEX + "0",
                                  "sha256:../../etc/passwd", "md5:abc", HEX, "sha512:" + HEX])
def test_bad_digests(text):
    with pytest.raises(DigestInvalid):
        Digest.parse(text)


@pytest.mark.parametrize("tag", ["", ".hidden", "-x", "a/b", "x" * 129, "a..b/"])
def test_bad_tags(tag):
    with pytest.raises(TagInvalid):
        check_tag(tag)


@pytest.mark.parametrize("text,path,reference", [
    ("alpine", "alpine", "latest"),
    (" up.test/tools/alpha:1.0 ", "up.test/tools/alpha", "1.0"),
    ("localhost:5000/app", "localhost:5000/app", "latest"),
    ("localhost:5000/app:2", "localhost:5000/app", "2"),
    (f"app@sha256:{HEX}", "app", f"sha256:{HEX}"),
])
def test_image_ref_parse(text, path, reference):
    assert ImageRef.parse(text) == ImageRef(path, reference)

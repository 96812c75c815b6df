"""Names of converted images: the namespace for `[sif] platform`, a prefix per other
platform, the source's canonical name as the path; routed like any name, and no upstream
prefix may take one. The ORAS manifest they are served with has Apptainer's bytes."""

from __future__ import annotations

import hashlib

import pytest

from mirror import config as config_module
from mirror.errors import ConfigError, NameInvalid
from mirror.proxy.routing import Router
from mirror.proxy.sif_artifact import sif_manifest
from mirror.reference import Digest, Repository, check_name
from mirror.sif_names import SifNames, source_digest_tag

NAMES = SifNames("sif", "linux/amd64")
ROUTER = Router(config_module.load())  # docker.io (default, library/), ghcr.io, quay.io


@pytest.mark.parametrize(
    "platform, prefix",
    [
        ("linux/amd64", "sif"),
        ("linux/arm64", "sif-linux-arm64"),
        ("linux/arm/v7", "sif-linux-arm-v7"),
        ("linux/x86_64", "sif-linux-x86_64"),
    ],
)
def test_each_platform_has_one_prefix_and_back(platform: str, prefix: str):
    assert NAMES.prefix_for(platform) == prefix
    assert NAMES.platform_of(prefix) == platform
    assert check_name(prefix) == prefix  # a component of the distribution grammar


@pytest.mark.parametrize("prefix", ["docker.io", "sifs", "sif-", "sif-linux", "sif-a-b-c-d", "x"])
def test_other_prefixes_are_no_sif_names(prefix: str):
    assert NAMES.platform_of(prefix) is None


@pytest.mark.parametrize(
    "path, expected",
    [
        ("sif/alpine", Repository("sif", "docker.io/library/alpine")),
        ("sif/docker.io/library/alpine", Repository("sif", "docker.io/library/alpine")),
        ("sif-linux-amd64/alpine", Repository("sif", "docker.io/library/alpine")),
        ("sif-linux-arm64/ghcr.io/org/tool", Repository("sif-linux-arm64", "ghcr.io/org/tool")),
        ("sif/sif/x", Repository("sif", "docker.io/sif/x")),  # one level: no SIF of a SIF
        ("sifs/alpine", Repository("docker.io", "sifs/alpine")),
    ],
)
def test_sif_paths_route_to_the_source_s_canonical_name(path: str, expected: Repository):
    repo = ROUTER.route(path)
    assert repo == expected
    assert ROUTER.route(str(repo)) == repo  # the canonical name routes to itself
    source = ROUTER.source_of(repo)
    assert ROUTER.source_of(source) == source
    if NAMES.is_sif(repo):
        assert str(source) == repo.name


def test_a_name_too_long_for_its_source_upstream_is_invalid_as_a_sif_too():
    with pytest.raises(NameInvalid, match="too long"):
        ROUTER.route("sif/" + "a" * 227)


def test_source_digests_are_tags_of_their_own():
    hex_digest = "ab" * 32
    assert source_digest_tag(f"sha256-{hex_digest}") == f"sha256:{hex_digest}"
    assert source_digest_tag("3.20") is None
    assert source_digest_tag(f"sha256-{hex_digest}.sig") is None  # cosign's tags stay tags


@pytest.mark.parametrize("prefix", ["sif", "sif-linux-arm64"])
def test_an_upstream_prefix_may_not_be_a_sif_name(tmp_path, prefix: str):
    site = tmp_path / "mirror.toml"
    site.write_text(f'[upstreams.x]\nurl = "https://r.example"\nprefix = "{prefix}"\n')
    with pytest.raises(ConfigError) as error:
        config_module.load(site)
    assert any("is a name of the SIF namespace" in p for p in error.value.problems)


def test_the_oras_manifest_has_the_bytes_apptainer_pushes():
    """The 463 bytes Apptainer 1.3.1-1.5 pushes for Sylabs' one-group.sif (40960 bytes;
    reference/sif-oras-facts.md, A4)."""
    body = sif_manifest(
        Digest("92d82d3d26e2de3227b54b8dafe05aee9e4bdb2840e59847b51d34e3682cd7cc"),
        40960,
        "one-group.sif",
    )
    assert len(body) == 463
    assert hashlib.sha256(body).hexdigest() == (
        "69fc082d531974813d8c8a5fb6a6c4355ca255f83fc673270ff52912ea89088e"
    )

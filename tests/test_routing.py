"""Which upstream and repository a client's path and `?ns=` name: any text gives a
repository every upstream can take, or NAME_UNKNOWN / NAME_INVALID."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror import config as config_module
from mirror.errors import NameInvalid, NameUnknown
from mirror.proxy.routing import Router
from mirror.reference import MAX_NAME_LENGTH, Repository, check_name

CONFIG = config_module.load()  # docker.io (default, library/), ghcr.io, quay.io
ROUTER = Router(CONFIG)
HOSTS = {u.prefix: u.host for u in CONFIG.upstreams}


@pytest.mark.parametrize(
    "path,ns,expected",
    [
        ("alpine", None, Repository("docker.io", "library/alpine")),
        ("ghcr.io/org/tool", None, Repository("ghcr.io", "org/tool")),
        ("org/tool", "ghcr.io", Repository("ghcr.io", "org/tool")),
        ("org/tool", "quay.io", Repository("quay.io", "org/tool")),
        ("a" * 226, None, Repository("docker.io", "library/" + "a" * 226)),  # 255 with host
    ],
)
def test_routes(path, ns, expected):
    assert ROUTER.route(path, ns) == expected


@pytest.mark.parametrize(
    "path",
    [
        "a" * 227,  # the library rule takes it past 255 with the host
        "a" * 250,  # distribution answers 500 to library/<250 a's>: never sent
        "/".join(["abcdefg"] * 32),  # the name: 255 characters, 276 with the host
        "docker.io/" + "b/" * 117 + "b",  # 235 characters after the prefix
    ],
)
def test_names_too_long_for_their_upstream_are_invalid(path):
    with pytest.raises(NameInvalid, match="too long"):
        ROUTER.route(path)


NAMEISH = st.text(st.sampled_from("abc019._-/:"), max_size=300) | st.builds(
    "{}{}".format, st.sampled_from(["sif/", "sif-linux-arm64/", "sif-a/"]), st.text("abc/.-")
)
NS = st.none() | st.sampled_from([*HOSTS, *HOSTS.values(), "", "DOCKER.IO"]) | st.text()


@given(st.one_of(NAMEISH, st.text()), NS)
def test_any_path_and_ns_give_a_repository_or_a_name_error(path, ns):
    try:
        repo = ROUTER.route(path, ns)
    except (NameUnknown, NameInvalid):
        return
    repo = ROUTER.source_of(repo)  # a SIF name's source is checked like any name
    assert repo.prefix in HOSTS
    assert check_name(repo.name) == repo.name
    assert len(HOSTS[repo.prefix]) + 1 + len(repo.name) <= MAX_NAME_LENGTH
    if ns:
        assert ns in (repo.prefix, HOSTS[repo.prefix])
    assert repo.name == path or path.endswith(repo.name.removeprefix("library/"))

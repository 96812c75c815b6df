"""The gate's answers that a real mirror cannot be made to give in the process tests: a
directory that does not answer, and a Host header that must not shape the challenge."""

from __future__ import annotations

import asyncio
import base64

import pytest
from aiohttp.test_utils import make_mocked_request

from mirror import config as config_module
from mirror.access.authenticator import Authenticator
from mirror.access.identity import Identity
from mirror.access.policy import AccessPolicy
from mirror.access.tokens import TokenSigner
from mirror.errors import DirectoryUnavailable
from mirror.proxy.access_gate import AccessGate
from mirror.proxy.handlers import oci_error
from mirror.proxy.routing import Router
from mirror.reference import Repository


class UnreachableDirectory:
    async def authenticate(self, user: str, password: str) -> Identity | None:
        raise DirectoryUnavailable("the user directory did not answer; try again shortly")


@pytest.fixture
def gate(tmp_path) -> AccessGate:
    (tmp_path / "htpasswd").write_text("")
    site = tmp_path / "site.toml"
    site.write_text(
        f'[auth]\nhtpasswd = "{tmp_path / "htpasswd"}"\n'
        '[upstreams.up]\nurl = "http://127.0.0.1:9"\nprefix = "up.test"\n'
        'default = true\naccess = "authenticated"\n'
    )
    config = config_module.load(site)
    return AccessGate(
        AccessPolicy(config.upstreams),
        Authenticator([UnreachableDirectory()]),
        TokenSigner(b"k" * 32, 300),
        Router(config),
        fallback_host="mirror.example.org:5000",
    )


def test_a_directory_that_does_not_answer_is_503_not_a_failed_login(gate):
    credentials = base64.b64encode(b"alice:alice pw").decode()
    request = make_mocked_request(
        "GET", "/v2/up.test/a/manifests/1", headers={"Authorization": f"Basic {credentials}"}
    )
    for _ in range(10):  # never throttled: nothing failed
        with pytest.raises(DirectoryUnavailable) as raised:
            asyncio.run(gate.check_pull(request, Repository("up.test", "a")))
        assert oci_error(raised.value).status == 503


@pytest.mark.parametrize(
    ("host", "realm"),
    [
        ("mirror.site:5000", "http://mirror.site:5000/token"),
        ("[::1]:5000", "http://[::1]:5000/token"),
        ('evil",scope="x', "http://mirror.example.org:5000/token"),
    ],
)
def test_the_realm_follows_the_host_the_client_used_if_it_is_a_host(gate, host, realm):
    request = make_mocked_request("GET", "/v2/", headers={"Host": host})
    assert gate.realm(request) == realm

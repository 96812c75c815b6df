"""The registry client: which failures count against an upstream, and that no client can
take an upstream away from the others."""

from __future__ import annotations

import asyncio
import logging
import os
import resource

import aiohttp
import pytest
import requests
from aiohttp import web
from hypothesis import example, given
from hypothesis import strategies as st

from mirror.config import ClientConfig, UpstreamConfig
from mirror.errors import MirrorError, UpstreamBadGateway, UpstreamFailed, UpstreamUnavailable
from mirror.proxy.upstream import Challenge, RegistryClient, parse_challenge
from tests.conftest import upstream_entry
from tests.support import oci
from tests.support.processes import free_port

ACCEPT = {"Accept": oci.ACCEPT_ALL_MANIFESTS}
HEX = "ab" * 32

# A one-component name the library rule makes 258 characters long upstream, which
# distribution answers with 500; and the name, 32 components and 255 characters.
LONG_NAMES = ("a" * 250, "/".join(["abcdefg"] * 32))


def test_client_chosen_names_never_open_the_breaker(make_proxy, upstream, seeded):
    """Issue 8, defect 1: a few GETs of an over-long name made the real upstream answer 500,
    the breaker opened, and every cold pull of every repository got 503 for 30 s."""
    proxy = make_proxy({"hub": upstream_entry(upstream.url, library_namespace="library")})
    since = upstream.mark()
    paths = [
        f"/v2/{name}/{tail}"
        for name in LONG_NAMES
        for tail in ("manifests/v1", "tags/list", f"blobs/sha256:{HEX}")
    ]
    for attempt in range(100):
        response = requests.get(proxy.url + paths[attempt % len(paths)], timeout=30)
        assert response.status_code == 400, response.text
        assert response.json()["errors"][0]["code"] == "NAME_INVALID"
    assert not any(
        "aaaaaaaaaa" in r.path or "abcdefg" in r.path for r in upstream.requests()[since:]
    ), "a name the upstream cannot take was sent to it"

    image = seeded["tools/alpha:1.0"]  # cold: this proxy has an empty cache
    response = requests.get(f"{proxy.url}/v2/tools/alpha/manifests/1.0", headers=ACCEPT, timeout=30)
    assert response.status_code == 200, response.text
    assert response.content == image.manifest
    for blob in image.blobs:
        got = requests.get(f"{proxy.url}/v2/tools/alpha/blobs/{blob['digest']}", timeout=30)
        assert got.status_code == 200, got.text
        assert len(got.content) == blob["size"]


# -- which failures count ------------------------------------------------------------------


def _settings(**overrides) -> ClientConfig:
    values = dict(
        connect_timeout_seconds=2,
        read_timeout_seconds=1,
        retries=0,
        max_retry_wait_seconds=0,
        breaker_failures=1,
        breaker_cooldown_seconds=60,
    )
    return ClientConfig(**{**values, **overrides})


def _upstream(url: str) -> UpstreamConfig:
    return UpstreamConfig("up", url, "up.test", True, "", False, "", "")


class _Upstream:
    """An in-process upstream whose manifest answer is set per test; counts requests."""

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        self.requests = 0

    async def answer(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        await asyncio.sleep(self.delay)
        return web.json_response({"errors": []}, status=self.status)


@pytest.fixture
async def fake_upstream(aiohttp_server):
    upstream = _Upstream()
    app = web.Application()
    app.router.add_get("/v2/{tail:.*}", upstream.answer)
    server = await aiohttp_server(app)
    upstream.url = str(server.make_url("")).rstrip("/")
    return upstream


async def _outcome(client: RegistryClient) -> int | type[MirrorError]:
    try:
        async with client.request("GET", "/v2/a/manifests/1", scope="repository:a:pull") as r:
            return r.status
    except MirrorError as exc:
        return type(exc)


async def _breaker_opened(client: RegistryClient, upstream: _Upstream) -> bool:
    """After one failure (threshold 1), does the next request fail without being sent?"""
    upstream.status, upstream.delay = 200, 0.0
    before = upstream.requests
    outcome = await _outcome(client)
    return outcome is UpstreamUnavailable and upstream.requests == before


@pytest.mark.parametrize(
    "status,counts,attempts",
    [
        (429, True, 3),
        (502, True, 3),
        (503, True, 3),
        (504, True, 3),
        (500, False, 1),
        (501, False, 1),
        (505, False, 1),
        (400, False, 1),
        (403, False, 1),
        (404, False, 1),
    ],
)
async def test_only_an_unwell_upstream_is_retried_and_counted(
    fake_upstream, status, counts, attempts
):
    async with aiohttp.ClientSession() as session:
        client = RegistryClient(_upstream(fake_upstream.url), session, _settings(retries=2))
        fake_upstream.status = status
        outcome = await _outcome(client)
        assert fake_upstream.requests == attempts
        assert outcome == (UpstreamBadGateway if counts else status)
        assert await _breaker_opened(client, fake_upstream) is counts


async def test_timeouts_and_refused_connections_count(fake_upstream):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_read=0.5)) as session:
        client = RegistryClient(_upstream(fake_upstream.url), session, _settings())
        fake_upstream.delay = 2.0
        assert issubclass(await _outcome(client), UpstreamFailed)
        assert await _breaker_opened(client, fake_upstream)

        refused = RegistryClient(_upstream(f"http://127.0.0.1:{free_port()}"), session, _settings())
        assert await _outcome(refused) is UpstreamUnavailable
        with pytest.raises(UpstreamUnavailable, match="keeps failing"):
            async with refused.request("GET", "/v2/", scope=""):
                pass


async def test_the_breaker_logs_when_it_opens_and_closes(fake_upstream, caplog):
    caplog.set_level(logging.WARNING, logger="mirror.proxy.upstream")
    async with aiohttp.ClientSession() as session:
        client = RegistryClient(
            _upstream(fake_upstream.url), session, _settings(breaker_cooldown_seconds=0.2)
        )
        fake_upstream.status = 503
        await _outcome(client)
        opened = [r.getMessage() for r in caplog.records if "breaker opened" in r.getMessage()]
        assert opened == [
            "up: circuit breaker opened after 1 failed requests (last: upstream up answered "
            "503 after 1 attempts); requests fail at once for 0s, then one request tries again"
        ]
        await asyncio.sleep(0.3)
        fake_upstream.status = 200
        assert await _outcome(client) == 200
        assert caplog.records[-1].getMessage() == (
            "up: circuit breaker closed: the upstream answers again"
        )
        assert await _outcome(client) == 200
        assert sum("breaker" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        (lambda: f"http://127.0.0.1:{free_port()}", "(Connection refused)"),
        (lambda: "http://no-such-host.invalid", "(DNS: "),
    ],
)
async def test_a_failed_connection_names_its_cause(url, cause):
    async with aiohttp.ClientSession() as session:
        client = RegistryClient(_upstream(url()), session, _settings())
        with pytest.raises(UpstreamUnavailable) as caught:
            async with client.request("GET", "/v2/", scope=""):
                pass
        assert "upstream up is unreachable " + cause in caught.value.message


async def test_running_out_of_descriptors_counts_against_no_upstream(fake_upstream):
    """EMFILE while connecting is the mirror's trouble: reported (503), not counted."""
    async with aiohttp.ClientSession() as session:
        client = RegistryClient(_upstream(fake_upstream.url), session, _settings())
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        lowest_free = os.open(os.devnull, os.O_RDONLY)
        os.close(lowest_free)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no new descriptor
        try:
            with pytest.raises(UpstreamUnavailable, match="out of file descriptors"):
                async with client.request("GET", "/v2/a/manifests/1", scope=""):
                    pass
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert fake_upstream.requests == 0
        assert await _outcome(client) == 200  # the breaker (threshold 1) stayed closed


# -- WWW-Authenticate ------------------------------------------------------------------------
# Property-based: any header gives a Challenge or None, and a challenge written from its
# parameters (RFC 9110 auth-params, quoted strings with escapes) reads back the same.

TOKEN = st.text(st.sampled_from("abcXYZ019!#$%&'*+-.^_`|~"), min_size=1, max_size=12)
QUOTABLE = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f")
)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@given(
    st.text()
    | st.builds(lambda s, rest: f"{s} {rest}", st.sampled_from(["Bearer", "basic"]), st.text())
)
def test_any_header_is_a_challenge_or_none(header):
    challenge = parse_challenge(header)
    assert challenge is None or challenge.scheme in ("basic", "bearer")


@given(
    st.sampled_from(["Bearer", "bearer", "BASIC", "Basic"]),
    st.dictionaries(TOKEN, QUOTABLE, max_size=4).filter(
        lambda params: len({key.lower() for key in params}) == len(params)
    ),
)
@example("Bearer", {"realm": 'https://auth.example/token?x="1"'})  # an escaped quote
@example("Bearer", {".": ""})  # found by hypothesis: "." is a token; \w+ skipped it
@example("Bearer", {"error-uri": "x"})  # so a token with "-" was read as "uri"
def test_a_challenge_round_trips(scheme, params):
    header = f"{scheme} " + ", ".join(f"{key}={_quoted(value)}" for key, value in params.items())
    assert parse_challenge(header) == Challenge(
        scheme.lower(), {key.lower(): value for key, value in params.items()}
    )


def test_a_real_registrys_challenge():
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull",error="insufficient_scope"'
    )
    assert parse_challenge(header) == Challenge(
        "bearer",
        {
            "realm": "https://auth.docker.io/token",
            "service": "registry.docker.io",
            "scope": "repository:library/alpine:pull",
            "error": "insufficient_scope",
        },
    )

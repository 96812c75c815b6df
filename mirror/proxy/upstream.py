"""The registry client: one aiohttp session for all upstreams, auth, redirects and retries.

- Auth: anonymous, Basic, or Bearer tokens from the registry's token endpoint (learned from
  the WWW-Authenticate challenge), cached per (realm, service, scope) until they expire, with
  one retry on 401. Credentials are the mirror's own, from config; a client's Authorization
  header is never forwarded, and ours is never sent to a host other than the upstream's.
- Redirects (blob storage on another host) are followed by hand so Authorization is dropped
  whenever the origin changes.
- Only failures that say the upstream itself is unwell are retried (bounded backoff that
  honours Retry-After) and counted by its circuit breaker: no connection, no answer in time,
  a reset, or 429/502/503/504 (`policy.UNWELL_STATUSES`). Any other answer, a 500 included,
  is this request's own: distribution answers 500 to a name it cannot store, so a client could
  provoke one at will; retrying it would multiply the upstream requests a client can cause,
  and counting it would let one client open the breaker for everyone. Running out of file
  descriptors or memory is the mirror's trouble and counts against no upstream either.
- TLS: the system's CAs, plus the upstream's own `ca_file` (a site's internal CA) for every
  request made on its behalf (token realm and redirects included).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp

from mirror import __version__
from mirror.config import ClientConfig, UpstreamConfig
from mirror.errors import (
    Denied,
    MirrorError,
    UpstreamBadGateway,
    UpstreamOffline,
    UpstreamTimeout,
    UpstreamUnavailable,
    out_of_resources,
)
from mirror.metrics import series
from mirror.proxy import policy
from mirror.proxy.ranges import parse_content_range

log = logging.getLogger(__name__)

USER_AGENT = f"hpc-mirror/{__version__} (+aiohttp/{aiohttp.__version__})"
_REDIRECTS = {301, 302, 303, 307, 308}
_MAX_REDIRECTS = 5
_TOKEN_MIN_LIFETIME = 60.0
# RFC 9110 auth-param: token BWS "=" BWS (quoted-string / token); unquoted values are read
# leniently (registries send URLs unquoted).
_CHALLENGE_PARAM = re.compile(
    r"""([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))""",
    re.DOTALL,
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # "basic" or "bearer"
    params: dict[str, str]


class _Unwell(Exception):
    """Carries a failure that says the upstream itself is unwell, so the breaker counts it."""

    def __init__(self, failure: MirrorError) -> None:
        super().__init__(failure.message)
        self.failure = failure


def parse_challenge(header: str) -> Challenge | None:
    """The Basic or Bearer challenge of a WWW-Authenticate header; None for any other."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() not in ("basic", "bearer"):
        return None
    params = {}
    for key, quoted, bare in _CHALLENGE_PARAM.findall(rest):
        params[key.lower()] = _QUOTED_PAIR.sub(r"\1", quoted) if quoted else bare
    return Challenge(scheme.lower(), params)


class RegistryClient:
    """Talks to one upstream registry on behalf of the proxy."""

    def __init__(
        self, upstream: UpstreamConfig, session: aiohttp.ClientSession, settings: ClientConfig
    ) -> None:
        self.upstream = upstream
        self._session = session
        self._settings = settings
        self._ssl = _ssl_context(upstream)
        self._origin = _origin(upstream.url)
        self._breaker = policy.CircuitBreaker(
            settings.breaker_failures, settings.breaker_cooldown_seconds
        )
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, str, str], tuple[str, float, float]] = {}
        self._token_locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._received_bytes = series.UPSTREAM_BYTES.labels(upstream.name)
        self._breaker_open = series.BREAKER_OPEN.labels(upstream.name)
        self._breaker_open.set(0)

    def count_received(self, count: int) -> None:
        """Count body bytes received from this upstream (for /metrics)."""
        self._received_bytes.inc(count)

    # -- public API ------------------------------------------------------------------------
    def reload_password(self) -> str | None:
        """Read the password from its `password_env` / `password_file` again (SIGHUP) and
        use it from the next request on, dropping tokens the old one bought. Says what
        happened ("changed", "unchanged", or kept after a failure, which is logged); None
        when the upstream has no password."""
        source = self.upstream.password_source
        if source is None:
            return None
        what = f"upstream {self.upstream.name}: password"
        password, state = source.reread(self.upstream.password, what)
        if state == "changed":
            self.upstream = replace(self.upstream, password=password)
            self._tokens.clear()
        return state

    @asynccontextmanager
    async def request(
        self, method: str, path: str, *, scope: str, headers: dict[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send an idempotent request for `path` (starting with /v2/) and yield the final
        response, body unread. Retries and auth happen here; the caller maps statuses."""
        response = await self._send_with_retries(
            method, self.upstream.url + path, scope, headers or {}
        )
        try:
            yield response
        finally:
            response.release()

    @asynccontextmanager
    async def request_ok(
        self,
        method: str,
        name: str,
        path: str,
        not_found: MirrorError,
        accept: str | None = None,
        range_from: int | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A 200 response to `method /v2/<name>/<path>` with pull scope on repository
        `name`: a 404 raises `not_found`, any other status is the upstream's failure.
        `range_from` asks for the bytes from that offset on: 206 and 416 answers are
        yielded too, for the caller to check which bytes it got."""
        headers = {"Accept": accept} if accept else {}
        expected = {200}
        if range_from is not None:
            headers["Range"] = f"bytes={range_from}-"
            expected |= {206, 416}
        async with self.request(
            method, f"/v2/{name}/{path}", scope=f"repository:{name}:pull", headers=headers
        ) as response:
            if response.status == 404:
                raise not_found
            if response.status not in expected:
                raise UpstreamBadGateway(
                    f"upstream answered {response.status} to {method} {path.split('/')[0]}"
                )
            yield response

    @asynccontextmanager
    async def blob_from(
        self, name: str, digest: str, not_found: MirrorError, start: int = 0
    ) -> AsyncIterator[tuple[aiohttp.ClientResponse, int | None, int]]:
        """A GET of blob `digest` of repository `name` for a caller that holds its first
        `start` bytes already: the response, the blob's size, and how many bytes at the
        start of the body the caller holds (to read past). With `start`, only the rest is
        asked for (`Range`); an upstream that ignores it sends the whole blob, and one that
        answers some other range is asked again for the whole blob."""
        path = f"blobs/{digest}"
        if start:
            async with self.request_ok("GET", name, path, not_found, range_from=start) as response:
                if response.status == 200:
                    log.info(
                        "%s ignored the Range of %s; reading past %d bytes",
                        self.upstream.name,
                        path,
                        start,
                    )
                    yield response, response.content_length, start
                    return
                size = _resumed_size(response, start)
                if size is not None:
                    yield response, size, 0
                    return
            log.warning(
                "%s answered %d to a Range of %s from byte %d; fetching it whole",
                self.upstream.name,
                response.status,
                path,
                start,
            )
        async with self.request_ok("GET", name, path, not_found) as response:
            yield response, response.content_length, start

    # -- retries ---------------------------------------------------------------------------
    async def _send_with_retries(
        self, method: str, url: str, scope: str, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        """Offline and open-breaker upstreams fail at once; otherwise the request is tried
        and retried, and its outcome feeds the breaker."""
        if self.upstream.offline:
            raise UpstreamOffline(
                f"the mirror is offline for upstream {self.upstream.name}: "
                "only cached content is served"
            )
        if not self._breaker.allow(time.monotonic()):
            raise UpstreamUnavailable(
                f"upstream {self.upstream.name} keeps failing; the mirror asks it again in "
                f"{self._breaker.retry_in(time.monotonic()):.0f}s"
            )
        try:
            response = await self._attempts(method, url, scope, headers)
        except _Unwell as unwell:
            was_open = self._breaker.is_open
            self._breaker.failed(time.monotonic())
            if self._breaker.is_open and not was_open:
                self._breaker_open.set(1)
                log.warning(
                    "%s: circuit breaker opened after %d failed requests (last: %s); requests "
                    "fail at once for %.0fs, then one request tries again",
                    self.upstream.name,
                    self._breaker.failures,
                    unwell.failure.message,
                    self._settings.breaker_cooldown_seconds,
                )
            raise unwell.failure from None
        except BaseException:
            self._breaker.inconclusive()  # denied, cancelled, the mirror's own trouble
            raise
        if self._breaker.is_open:
            log.warning(
                "%s: circuit breaker closed: the upstream answers again", self.upstream.name
            )
            self._breaker_open.set(0)
        self._breaker.succeeded()
        return response

    async def _attempts(
        self, method: str, url: str, scope: str, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        """The final response, or _Unwell once every attempt met an unwell upstream."""
        attempts = self._settings.retries + 1
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                response = await self._send_with_auth(method, url, scope, headers)
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
                failure = _failure_from_exception(exc, self.upstream)
                if isinstance(exc, aiohttp.ClientConnectorCertificateError):
                    raise failure from None  # retrying cannot help; the upstream is not unwell
                if last:
                    # Out of descriptors or memory is the mirror's trouble, not the upstream's.
                    raise (failure if out_of_resources(exc) else _Unwell(failure)) from None
                await self._pause_before_retry(method, url, attempt, f"failed ({failure.message})")
                continue
            if response.status not in policy.UNWELL_STATUSES:
                return response
            retry_after = response.headers.get("Retry-After")
            response.release()
            if last:
                raise _Unwell(
                    UpstreamBadGateway(
                        f"upstream {self.upstream.name} answered {response.status} "
                        f"after {attempts} attempts"
                    )
                )
            await self._pause_before_retry(
                method, url, attempt, f"answered {response.status}", retry_after
            )
        raise AssertionError("unreachable")

    async def _pause_before_retry(
        self, method: str, url: str, attempt: int, outcome: str, retry_after: str | None = None
    ) -> None:
        delay = policy.retry_delay(
            attempt, retry_after, time.time(), self._settings.max_retry_wait_seconds
        )
        series.UPSTREAM_RETRIES.labels(self.upstream.name).inc()
        log.warning(
            "%s: %s %s %s; retry %d in %.1fs",
            self.upstream.name,
            method,
            _loggable(url),
            outcome,
            attempt,
            delay,
        )
        await asyncio.sleep(delay)

    # -- auth ------------------------------------------------------------------------------
    async def _send_with_auth(
        self, method: str, url: str, scope: str, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        authorization = await self._authorization(scope, refresh=False)
        response = await self._send_following_redirects(method, url, headers, authorization)
        if response.status != 401:
            return response
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        response.release()
        if challenge is None:
            raise Denied(
                f"upstream {self.upstream.name} requires an authentication scheme "
                "the mirror does not support"
            )
        self._challenge = challenge
        authorization = await self._authorization(scope, refresh=True)
        if authorization is None:
            raise Denied(
                f"upstream {self.upstream.name} requires credentials and none are configured for it"
            )
        response = await self._send_following_redirects(method, url, headers, authorization)
        if response.status == 401:
            response.release()
            raise Denied(f"upstream {self.upstream.name} refused the mirror's credentials")
        return response

    async def _authorization(self, scope: str, *, refresh: bool) -> str | None:
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._basic_auth()
        return await self._bearer(challenge, scope, refresh)

    def _basic_auth(self) -> str | None:
        if not self.upstream.username:
            return None
        raw = f"{self.upstream.username}:{self.upstream.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    async def _bearer(self, challenge: Challenge, scope: str, refresh: bool) -> str | None:
        realm = challenge.params.get("realm", "")
        service = challenge.params.get("service", "")
        key = (realm, service, scope)
        asked_at = time.monotonic()
        lock = self._token_locks.setdefault(key, asyncio.Lock())
        async with lock:  # concurrent requests for one scope share one token fetch
            cached = self._tokens.get(key)
            if cached:
                token, fetched_at, expires_at = cached
                # On a refresh, a token fetched while we waited for the lock is new enough.
                usable = fetched_at >= asked_at if refresh else True
                if usable and expires_at > time.monotonic():
                    return "Bearer " + token
            token, lifetime = await self._fetch_token(realm, service, scope)
            now = time.monotonic()
            self._tokens[key] = (token, now, now + lifetime)
            return "Bearer " + token

    async def _fetch_token(self, realm: str, service: str, scope: str) -> tuple[str, float]:
        if urlsplit(realm).scheme not in ("http", "https"):
            raise UpstreamBadGateway(f"upstream {self.upstream.name} sent an unusable token realm")
        query = {"service": service, "scope": scope} if service else {"scope": scope}
        headers = {"User-Agent": USER_AGENT}
        basic = self._basic_auth()
        if basic:
            headers["Authorization"] = basic
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        # Connection failures and timeouts go up to the retry loop, like the request's own.
        response = await self._counted(
            "GET", series.TOKEN, self._session.get(url, headers=headers, ssl=self._ssl)
        )
        async with response:
            if response.status in (401, 403):
                raise Denied(
                    f"token endpoint of upstream {self.upstream.name} refused "
                    "the mirror's credentials"
                )
            if response.status != 200:
                failure = UpstreamBadGateway(
                    f"token endpoint of upstream {self.upstream.name} answered {response.status}"
                )
                if response.status in policy.UNWELL_STATUSES:
                    raise _Unwell(failure)
                raise failure
            try:
                body = await response.json(content_type=None)
            except ValueError:
                raise UpstreamBadGateway(
                    f"token endpoint of upstream {self.upstream.name} sent invalid JSON"
                ) from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise UpstreamBadGateway(
                f"token endpoint of upstream {self.upstream.name} sent no token"
            )
        expires_in = body.get("expires_in", 60)
        lifetime = float(expires_in) if isinstance(expires_in, (int, float)) else 60.0
        # Refresh a little early so a token never expires between fetch and use.
        return token, max(lifetime - 10.0, 1.0)

    # -- redirects -------------------------------------------------------------------------
    async def _send_following_redirects(
        self, method: str, url: str, headers: dict[str, str], authorization: str | None
    ) -> aiohttp.ClientResponse:
        route = _route_of(urlsplit(url).path)  # a redirect's target is still this route's
        for _ in range(_MAX_REDIRECTS + 1):
            request_headers = {"User-Agent": USER_AGENT, **headers}
            if authorization and _origin(url) == self._origin:
                request_headers["Authorization"] = authorization
            response = await self._counted(
                method,
                route,
                self._session.request(
                    method, url, headers=request_headers, allow_redirects=False, ssl=self._ssl
                ),
            )
            if response.status not in _REDIRECTS or "Location" not in response.headers:
                return response
            target = urljoin(url, response.headers["Location"])
            response.release()
            if urlsplit(target).scheme not in ("http", "https"):
                raise UpstreamBadGateway(
                    f"upstream {self.upstream.name} redirected to a non-HTTP location"
                )
            url = target
        raise UpstreamBadGateway(f"upstream {self.upstream.name} redirected too many times")

    async def _counted(
        self, method: str, route: str, sending: Awaitable[aiohttp.ClientResponse]
    ) -> aiohttp.ClientResponse:
        """Await one HTTP exchange with this upstream, counted by its status, or as `error`
        when no answer came (refused, reset, timed out)."""
        try:
            response = await sending
        except (aiohttp.ClientError, asyncio.TimeoutError):
            series.UPSTREAM_REQUESTS.labels(
                self.upstream.name, method, route, series.NO_ANSWER
            ).inc()
            raise
        series.UPSTREAM_REQUESTS.labels(
            self.upstream.name, method, route, str(response.status)
        ).inc()
        return response


@dataclass
class DetachedBody:
    """A response body of known length handed over by aiohttp: the bytes it had already
    buffered, then the rest on the connection, whose reading is paused. Plain HTTP comes
    with a blocking duplicate of the socket for a worker thread to receive from; over TLS
    (`sock` is None) the event loop must decrypt, through `transport`."""

    length: int  # of the whole body, prefix included
    prefix: bytes
    transport: asyncio.Transport
    sock: socket.socket | None


def detach_body(
    response: aiohttp.ClientResponse, *, plain_only: bool = False
) -> DetachedBody | None:
    """Take over the rest of a body with a known length, so it is received into reused
    buffers and hashed and written off the event loop, instead of aiohttp making a bytes
    object of every chunk (over plain HTTP the loop then is the bottleneck of a cold fill;
    over TLS that costs a fifth more CPU). None where that is not possible (chunked
    encoding, no connection): the caller reads through aiohttp as usual.

    The connection is closed afterwards (its parser never saw the body), never reused.
    With `plain_only`, a TLS body is left to aiohttp too (None).
    """
    connection = response.connection
    if (
        connection is None
        or response.content_length is None
        or connection.transport is None
        or connection.protocol is None
    ):
        return None
    transport = connection.transport
    if plain_only and transport.get_extra_info("ssl_object") is not None:
        return None
    prefix = response.content.read_nowait(-1)  # may resume reading; paused right below
    connection.protocol.pause_reading()  # also stops aiohttp's read timer
    raw = transport.get_extra_info("socket")
    if transport.get_extra_info("ssl_object") is not None or raw is None:
        return DetachedBody(response.content_length, prefix, transport, None)
    sock = socket.socket(fileno=os.dup(raw.fileno()))
    sock.setblocking(True)
    return DetachedBody(response.content_length, prefix, transport, sock)


class Upstreams:
    """Owns the one ClientSession and a RegistryClient per configured upstream."""

    def __init__(self, upstreams: tuple[UpstreamConfig, ...], settings: ClientConfig) -> None:
        self._upstreams = upstreams
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str, RegistryClient] = {}

    async def __aenter__(self) -> "Upstreams":
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self._settings.connect_timeout_seconds,
            sock_connect=self._settings.connect_timeout_seconds,
            sock_read=self._settings.read_timeout_seconds,
        )
        connector = aiohttp.TCPConnector(limit=256, limit_per_host=64, ttl_dns_cache=300)
        # A large read buffer lets blob bodies arrive in big chunks: fewer hops to the
        # hashing thread per MiB.
        self._session = aiohttp.ClientSession(
            timeout=timeout,
            connector=connector,
            read_bufsize=4 * 1024 * 1024,
            auto_decompress=False,
            trust_env=False,
        )
        self._clients = {
            u.prefix: RegistryClient(u, self._session, self._settings) for u in self._upstreams
        }
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    def client(self, prefix: str) -> RegistryClient:
        return self._clients[prefix]

    def reload_passwords(self) -> list[str]:
        """`RegistryClient.reload_password` of each upstream with a password, as
        "<name> (<what happened>)"."""
        reloaded = []
        for client in self._clients.values():
            state = client.reload_password()
            if state is not None:
                reloaded.append(f"{client.upstream.name} ({state})")
        return reloaded


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def _loggable(url: str) -> str:
    """The URL without its query: pre-signed storage URLs carry credentials there."""
    return url.split("?", 1)[0]


def _ssl_context(upstream: UpstreamConfig) -> ssl.SSLContext | bool:
    """The system's CAs plus the upstream's `ca_file`; True (aiohttp's default context)
    when it has none."""
    if upstream.ca_file is None:
        return True
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=upstream.ca_file)
    return context


def _failure_from_exception(exc: BaseException, upstream: UpstreamConfig) -> MirrorError:
    if out_of_resources(exc):
        return UpstreamUnavailable(
            f"the mirror is out of file descriptors or memory to connect to {upstream.name}"
        )
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        # Retrying cannot help: say what failed and what would fix it.
        reason = getattr(exc.certificate_error, "verify_message", "") or "not trusted"
        return UpstreamBadGateway(
            f"the TLS certificate of upstream {upstream.name} did not verify ({reason}); "
            f"if a site CA signed it, set upstreams.{upstream.name}.ca_file"
        )
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamTimeout(f"upstream {upstream.name} timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnavailable(f"upstream {upstream.name} is unreachable ({_cause(exc)})")
    return UpstreamUnavailable(f"connection to upstream {upstream.name} failed ({_cause(exc)})")


def _cause(exc: BaseException) -> str:
    """What went wrong underneath, in the operator's words: the resolver's or the kernel's
    message (name not known, connection refused, no route), a TLS reason, a disconnect."""
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"TLS handshake failed: {getattr(exc.os_error, 'reason', None) or exc.os_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        if isinstance(error, socket.gaierror):
            return f"DNS: {error.strerror}"
        # asyncio's strerror is "Connect call failed (addr)"; the errno says why.
        return os.strerror(error.errno) if error.errno else type(error).__name__
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the upstream closed the connection"
    return str(exc) or type(exc).__name__


def _route_of(path: str) -> str:
    """The route kind of an upstream path: `/v2/<name>/manifests/<reference>`,
    `/v2/<name>/blobs/<digest>`, `/v2/<name>/tags/list`."""
    kind = path.rsplit("/", 2)[-2:]
    if kind == ["tags", "list"]:
        return series.TAGS
    return {"manifests": series.MANIFEST, "blobs": series.BLOB}.get(kind[0], series.OTHER)


def _resumed_size(response: aiohttp.ClientResponse, start: int) -> int | None:
    """The blob's size if `response` is the 206 of its bytes from `start` to its end."""
    if response.status != 206:
        return None
    content_range = parse_content_range(response.headers.get("Content-Range", ""))
    if content_range is None:
        return None
    first, end, size = content_range
    if (first, end) != (start, size) or response.content_length not in (None, size - start):
        return None
    return size

"""Who is pulling, and whether they may: the access policy over HTTP.

Clients prove who they are with Basic credentials on any request, or with a bearer token
from `/token` (the distribution token flow every OCI client speaks). A request that may not
proceed gets `401` with a `Bearer` challenge naming the token URL and the scope to ask
for, or `403 DENIED` when a known user may not pull the repository.

Challenges and tokens name a repository by its canonical routed name, `<upstream
prefix>/<path>` (`str(Repository)`), never by the path the client sent: containerd pulling
through `?ns=ghcr.io` sends `org/tool` where other clients send `ghcr.io/org/tool`, and
`alpine` means `docker.io/library/alpine`. With one name per repository, a token is always
checked against the repository the request routes to, whatever spelling got it issued.
"""

from __future__ import annotations

import base64
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from mirror.access.authenticator import Authenticator
from mirror.access.identity import ANONYMOUS, Identity
from mirror.access.policy import AccessPolicy
from mirror.access.tokens import (
    AUDIENCE,
    InvalidToken,
    IssuedToken,
    TokenSigner,
    load_or_create_key,
    requested_access,
)
from mirror.config import Config
from mirror.errors import MirrorError, PullDenied, PushDenied, Unauthorized
from mirror.proxy.routing import Router
from mirror.proxy.served import served
from mirror.reference import Repository

log = logging.getLogger(__name__)

# A Host header the realm may be built from: a name or address and a port, nothing that
# could end the quoted challenge parameter.
_HOST_RE = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request. `pullable` and `pushable` are a token's scope (canonical
    names); None when the caller logged in with Basic credentials, so the policy alone
    decides."""

    identity: Identity
    has_credentials: bool
    pullable: frozenset[str] | None = None
    pushable: frozenset[str] | None = None


NOBODY = Caller(ANONYMOUS, has_credentials=False, pullable=frozenset(), pushable=frozenset())
_PULL = "pull"
_PULL_PUSH = "pull,push"  # what a writer asks for (distribution's clients ask the same)


class AccessGate:
    """Present (in `GATE`) only while `[auth]` is on: without it every request passes."""

    def __init__(
        self,
        policy: AccessPolicy,
        authenticator: Authenticator,
        signer: TokenSigner,
        router: Router,
        realm: str = "",
        fallback_host: str = "localhost",
    ) -> None:
        self.policy = policy
        self._authenticator = authenticator
        self._signer = signer
        self._router = router
        self._realm = realm
        self._fallback_host = fallback_host

    @classmethod
    def from_config(cls, config: Config, key_path: Path, router: Router) -> AccessGate:
        """The gate of a mirror with `[auth]` on; `key_path` is where the store keeps the
        token signing key (created here when no instance has made it yet)."""
        return cls(
            AccessPolicy(config.upstreams, config.local),
            Authenticator.from_config(config.auth),
            TokenSigner(load_or_create_key(key_path), config.auth.token_ttl_seconds),
            router,
            config.auth.realm,
            f"{config.server.host}:{config.server.port}",
        )

    def close(self) -> None:
        self._authenticator.close()

    def reload_secrets(self) -> list[str]:
        """SIGHUP: the login sources' secrets read again (`Authenticator.reload_secrets`)."""
        return self._authenticator.reload_secrets()

    # -- the checks handlers make ------------------------------------------------------------
    async def check_signed_in(self, request: web.Request) -> Caller:
        """`/v2/` and `/v2/_catalog`: any valid credentials, an anonymous token too. Without
        any, the challenge sends `login` commands to `/token`, so they verify the password,
        and anonymous clients fetch an anonymous token."""
        caller = await self.caller(request)
        if not caller.has_credentials:
            raise Unauthorized("authentication required", self.challenge(request))
        return caller

    async def check_pull(self, request: web.Request, repo: Repository) -> None:
        caller = await self.caller(request, repo)
        if self.policy.is_public(self._router.source_of(repo)):
            return
        if self.may_read(caller, repo):
            return
        if caller.identity.anonymous or self.may_pull(caller.identity, repo):
            # No credentials, or a token for other repositories: fetch one for this one.
            raise Unauthorized("authentication required", self.challenge(request, repo))
        raise PullDenied(f"{caller.identity} may not pull {repo}")

    async def check_push(self, request: web.Request, repo: Repository) -> Caller:
        """Writes (uploads, manifest PUT and DELETE) to the local namespace: the caller
        must be signed in, allowed by the policy, and (with a token) hold `push` for
        `repo`. A token without it is answered with a challenge for `pull,push`, which
        clients follow; a known user who may not write gets `403 DENIED`."""
        caller = await self.caller(request, repo, write=True)
        if caller.identity.anonymous:
            raise Unauthorized("authentication required", self.challenge(request, repo, write=True))
        if not self.policy.may_push(caller.identity, repo):
            raise PushDenied(f"{caller.identity} may not push to {repo}")
        if caller.pushable is not None and str(repo) not in caller.pushable:
            raise Unauthorized(
                "the token does not allow pushes here", self.challenge(request, repo, write=True)
            )
        return caller

    def may_read(self, caller: Caller, repo: Repository) -> bool:
        """The policy lets `caller` pull `repo` and, when they came with a token, its scope
        includes `repo` (a pull, or the `from` of a cross-repository mount)."""
        in_scope = caller.pullable is None or str(repo) in caller.pullable
        return in_scope and self.may_pull(caller.identity, repo)

    def may_pull(self, identity: Identity, repo: Repository) -> bool:
        """The policy's answer for `repo`; for a converted image, its source's (so what is
        restricted stays restricted as a SIF)."""
        return self.policy.may_pull(identity, self._router.source_of(repo))

    async def caller(
        self, request: web.Request, repo: Repository | None = None, *, write: bool = False
    ) -> Caller:
        """Who sent `request`, from its Basic credentials or bearer token; a `401` for any
        that do not verify (its challenge asks for `pull,push` on a `write`), since a
        client should not pull as someone it is not."""
        scheme, value = authorization(request)
        if scheme == "basic":
            identity = await self.login(request, *basic_credentials(value), repo=repo, write=write)
            return Caller(identity, has_credentials=True)
        if scheme == "bearer":
            try:
                grant = self._signer.verify(value)
            except InvalidToken as exc:
                log.info("refused a bearer token from %s: %s", _address(request), exc)
                raise Unauthorized(
                    "invalid or expired token",
                    self.challenge(request, repo, "invalid_token", write=write),
                ) from None
            served(request).user = grant.identity.user
            return Caller(grant.identity, True, grant.pullable, grant.pushable)
        return NOBODY

    async def login(
        self,
        request: web.Request,
        user: str,
        password: str,
        repo: Repository | None = None,
        write: bool = False,
    ) -> Identity:
        """The user whose password this is; `401` for an unknown user and a wrong password
        alike (`429` while failed logins make this client or name wait)."""
        identity = await self._authenticator.login(user, password, _address(request))
        if identity is None:
            raise Unauthorized(
                "invalid username or password", self.challenge(request, repo, write=write)
            )
        served(request).user = identity.user  # for the access log
        return identity

    # -- tokens ------------------------------------------------------------------------------
    def issue(self, identity: Identity, scopes: list[str]) -> IssuedToken:
        """A token for the repositories asked for (by any spelling that routes) with the
        actions `identity` may take there: pull, and push and delete in the local
        namespace; the others are left out, as distribution's token server does."""
        asked = requested_access(scopes)
        pullable, pushable = [], []
        for request in asked:
            try:
                repo = self._router.route(request.name)
            except MirrorError:
                continue
            if request.wants_pull and self.may_pull(identity, repo):
                pullable.append(str(repo))
            if request.wants_write and self.policy.may_push(identity, repo):
                pushable.append(str(repo))
        log.info(
            "issued a token to %s for %d of %d repositories asked (%d to write)",
            identity.user or "an anonymous client",
            len(set(pullable) | set(pushable)),
            len(asked),
            len(pushable),
        )
        return self._signer.issue(identity, pullable, pushable)

    def challenge(
        self,
        request: web.Request,
        repo: Repository | None = None,
        error: str | None = None,
        *,
        write: bool = False,
    ) -> str:
        """The `Bearer` challenge: where to get a token, and for which scope (`pull`, or
        `pull,push` for a write)."""
        params = [f'realm="{self.realm(request)}"', f'service="{AUDIENCE}"']
        if repo is not None:
            params.append(f'scope="repository:{repo}:{_PULL_PUSH if write else _PULL}"')
        if error is not None:
            params.append(f'error="{error}"')
        return "Bearer " + ",".join(params)

    def realm(self, request: web.Request) -> str:
        """`[auth] realm`, else the token URL on the host and scheme the client used."""
        if self._realm:
            return self._realm
        host = request.host if _HOST_RE.fullmatch(request.host or "") else self._fallback_host
        return f"{request.scheme}://{host}/token"


def authorization(request: web.Request) -> tuple[str, str]:
    """The scheme (lower case) and the credentials of the request's `Authorization`."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower(), value.strip()


def basic_credentials(value: str) -> tuple[str, str]:
    """User and password of a Basic `Authorization` value; garbage is an empty pair, which
    no source accepts."""
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except ValueError:  # binascii.Error and UnicodeDecodeError both are
        return "", ""
    user, _, password = decoded.partition(":")
    return user, password


def _address(request: web.Request) -> str:
    return request.remote or "-"


GATE = web.AppKey("access_gate", AccessGate)

"""Short-lived signed bearer tokens (JWT, HS256), as the distribution token flow hands out.

A token says who its holder is (`sub`, absent for anonymous; `groups`) and which
repositories it may pull, and which it may push to and delete in (`access`, in the
distribution format: actions `pull`, `push`, `delete`). Every instance on the
cluster signs with one key kept under the cache root, created by whichever instance
starts first, so a token from one login node is good on every other.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt

from mirror.access.identity import ANONYMOUS, Identity
from mirror.errors import MirrorError

log = logging.getLogger(__name__)

ISSUER = AUDIENCE = "hpc-mirror"
_ALGORITHM = "HS256"
_KEY_BYTES = 32
_MAX_TOKEN_CHARS = 16 * 1024  # a longer header is not one of ours: refused before decoding
_CLOCK_SKEW_SECONDS = 30  # between the instance that issued a token and the one checking it
_MAX_SCOPES = 100
WRITE_ACTIONS = frozenset({"push", "delete"})  # granted together, to writers of the repository


class InvalidToken(Exception):
    """The token is not one this mirror issued, or no longer valid (tampered, expired,
    for another audience). The message is for the log; it never quotes the token."""


class TokenKeyError(MirrorError):
    """The signing key under the cache root exists but cannot be used."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str = ""
    expires_in: int = 0  # seconds
    issued_at: str = ""  # RFC 3339


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token lets its holder do: pull the repositories named in `pullable`
    and write (push, delete) those in `pushable` (canonical names, `<prefix>/<path>`)."""

    identity: Identity
    pullable: frozenset[str]
    pushable: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ScopeRequest:
    """One repository a token request asks about (by the name the client spelled), and
    the actions it asks for there."""

    name: str
    actions: frozenset[str]

    @property
    def wants_pull(self) -> bool:
        return bool({"pull", "*"} & self.actions)

    @property
    def wants_write(self) -> bool:
        return bool({"push", "delete", "*"} & self.actions)


class TokenSigner:
    def __init__(
        self, key: bytes, ttl_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = key
        self._ttl = max(1, math.ceil(ttl_seconds))
        self._clock = clock

    def issue(
        self, identity: Identity, pullable: Iterable[str], pushable: Iterable[str] = ()
    ) -> IssuedToken:
        now = int(self._clock())
        pulls, writes = set(pullable), set(pushable)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + self._ttl,
            "jti": secrets.token_hex(16),
            "groups": sorted(identity.groups),
            "access": [
                {
                    "type": "repository",
                    "name": name,
                    "actions": (["pull"] if name in pulls else [])
                    + (sorted(WRITE_ACTIONS) if name in writes else []),
                }
                for name in sorted(pulls | writes)
            ],
        }
        if identity.user is not None:
            claims["sub"] = identity.user
        token = jwt.encode(claims, self._key, algorithm=_ALGORITHM)
        issued_at = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return IssuedToken(token, self._ttl, issued_at)

    def verify(self, token: str) -> Grant:
        if len(token) > _MAX_TOKEN_CHARS:
            raise InvalidToken("token too long")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                # Times are checked below, against this signer's clock.
                options={
                    "require": ["iss", "aud", "iat", "nbf", "exp", "jti"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from None
        self._check_times(claims)
        return Grant(_identity(claims), _granted(claims, "pull"), _granted(claims, "push"))

    def _check_times(self, claims: dict[str, Any]) -> None:
        times = [claims["nbf"], claims["exp"]]
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in times):
            raise InvalidToken("malformed nbf or exp claim")
        now = self._clock()
        if now >= claims["exp"] + _CLOCK_SKEW_SECONDS:
            raise InvalidToken("expired")
        if now < claims["nbf"] - _CLOCK_SKEW_SECONDS:
            raise InvalidToken("not valid yet")


def _identity(claims: dict[str, Any]) -> Identity:
    user = claims.get("sub")
    groups = claims.get("groups", [])
    if (user is not None and not isinstance(user, str)) or not isinstance(groups, list):
        raise InvalidToken("malformed sub or groups claim")
    if not all(isinstance(group, str) for group in groups):
        raise InvalidToken("malformed groups claim")
    return ANONYMOUS if user is None else Identity(user, frozenset(groups))


def _granted(claims: dict[str, Any], action: str) -> frozenset[str]:
    """The repositories the token's `access` claim grants `action` on."""
    access = claims.get("access", [])
    if not isinstance(access, list) or not all(isinstance(entry, dict) for entry in access):
        raise InvalidToken("malformed access claim")
    return frozenset(
        entry["name"]
        for entry in access
        if entry.get("type") == "repository"
        and isinstance(entry.get("name"), str)
        and isinstance(entry.get("actions"), list)
        and action in entry["actions"]
    )


def requested_access(scopes: Iterable[str]) -> list[ScopeRequest]:
    """The repositories a token request asks about, from its `scope` parameters (each may
    hold several, space-separated): `repository:<name>:pull[,push...]`, where the type
    may carry a class (`repository(plugin)`) and the name a registry port."""
    found = []
    for scope in (part for value in scopes for part in value.split()):
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind.split("(")[0] != "repository" or not name:
            continue
        request = ScopeRequest(name, frozenset(actions.split(",")))
        if request.wants_pull or request.wants_write:
            found.append(request)
        if len(found) >= _MAX_SCOPES:
            break
    return found


def requested_pulls(scopes: Iterable[str]) -> list[str]:
    """The repository names a token request asks to pull."""
    return [request.name for request in requested_access(scopes) if request.wants_pull]


def load_or_create_key(path: Path) -> bytes:
    """The signing key at `path`, created (mode 0600) if there is none yet. Safe when
    several instances start at once on a shared filesystem: each writes its own temp
    file and links it into place, which fails for all but one; all then read that one."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(_KEY_BYTES) + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temp, path)
            log.info("created the token signing key %s", path)
        except FileExistsError:
            pass  # another instance was first: its key is everybody's
    finally:
        os.unlink(temp)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    with open(path) as file:
        mode = os.fstat(file.fileno()).st_mode
        text = file.read().strip()
    if mode & 0o077:
        log.warning("the token signing key %s is readable by others: chmod 600 it", path)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < _KEY_BYTES:
        raise TokenKeyError(
            f"{path} does not hold a token signing key ({_KEY_BYTES * 2} hex digits); "
            "remove it and restart every instance to make a new one"
        )
    return key

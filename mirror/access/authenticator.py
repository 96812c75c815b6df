"""Logins: the configured password sources asked in turn, groups from the groups file
added to a source's own, and failed logins throttled."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mirror.access.groups_file import GroupsFile
from mirror.access.htpasswd import HtpasswdFile
from mirror.access.identity import Identity, PasswordCheck
from mirror.access.ldap_directory import LdapDirectory
from mirror.access.login_throttle import LoginThrottle
from mirror.config import AuthConfig
from mirror.errors import DirectoryUnavailable

log = logging.getLogger(__name__)

MAX_USER_CHARS = 256


def password_sources(auth: AuthConfig) -> list[PasswordCheck]:
    """Every source of users the config names, asked in this order."""
    sources: list[PasswordCheck] = []
    if auth.htpasswd is not None:
        sources.append(HtpasswdFile(auth.htpasswd))
    if auth.ldap is not None:
        sources.append(LdapDirectory(auth.ldap))
    return sources


class Authenticator:
    def __init__(
        self,
        sources: Sequence[PasswordCheck],
        groups: GroupsFile | None = None,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self._sources = list(sources)
        self._groups = groups
        self._throttle = throttle or LoginThrottle()

    @classmethod
    def from_config(cls, auth: AuthConfig) -> Authenticator:
        groups = GroupsFile(auth.groups_file) if auth.groups_file is not None else None
        return cls(password_sources(auth), groups)

    def close(self) -> None:
        for source in self._sources:
            source.close()

    def reload_secrets(self) -> list[str]:
        """SIGHUP: each source's own secret read again (the LDAP bind password); what
        happened to each."""
        return [done for source in self._sources if (done := source.reload_secret())]

    async def login(self, user: str, password: str, address: str) -> Identity | None:
        """The user with every group they belong to, or None for an unknown user or a
        wrong password alike. Raises `TooManyRequests` while the address or the name must
        wait after failed logins, and `DirectoryUnavailable` when no source that could
        answer did (that is not a failed login)."""
        throttled_name = user[:MAX_USER_CHARS]
        self._throttle.check(address, throttled_name)
        identity = None
        if _plausible(user, password):
            identity = await self._ask_sources(user, password)
        if identity is None:
            self._throttle.failed(address, throttled_name)
            log.info("failed login for user %r from %s", user[:64], address)
            return None
        self._throttle.succeeded(user)
        if self._groups is not None:
            identity = Identity(identity.user, identity.groups | self._groups.groups_of(user))
        return identity

    async def _ask_sources(self, user: str, password: str) -> Identity | None:
        unavailable: DirectoryUnavailable | None = None
        for source in self._sources:
            try:
                identity = await source.authenticate(user, password)
            except DirectoryUnavailable as exc:
                unavailable = exc
                continue
            if identity is not None:
                return identity
        if unavailable is not None:
            raise unavailable
        return None


def _plausible(user: str, password: str) -> bool:
    """What no source could accept: an empty password (LDAP would take it as an anonymous
    bind), a user name longer than any site uses, text that is not Unicode."""
    if not user or not password or len(user) > MAX_USER_CHARS:
        return False
    try:
        user.encode()
        password.encode()
    except UnicodeEncodeError:
        return False
    return True

"""The site directory as a password source: a user binds to LDAP as themselves, found by a
DN template or by a search; their groups come from a second search.

ldap3 blocks, so each login runs on a thread of a small pool of its own: a directory that
hangs occupies those threads and never the event loop or the proxy's file I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import secrets
import ssl
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from mirror.access.identity import Identity
from mirror.config import LdapConfig
from mirror.errors import DirectoryUnavailable

log = logging.getLogger(__name__)

MAX_USER_LENGTH = 256
_WORKERS = 8
# Each exchange of a login (connect, TLS, binds, searches) is bounded by timeout_seconds;
# the whole login, waiting for a free worker included, by this many of them.
_DEADLINE_TIMEOUTS = 4
# Answers to a user's bind that say the directory is in trouble or misconfigured (busy,
# unavailable, wants TLS for binds, ...) rather than "not this user with this password".
_TROUBLE_CODES = frozenset({1, 2, 3, 8, 11, 13, 51, 52, 80})
_SIZE_LIMIT_EXCEEDED = 4


class LdapDirectory:
    """`PasswordCheck` over `[auth.ldap]`. `close()` when done, to let the threads go."""

    def __init__(self, config: LdapConfig) -> None:
        self.config = config
        parts = urlsplit(config.url)
        self._ldaps = parts.scheme == "ldaps"
        self._host = parts.hostname or ""
        self._port = parts.port or (636 if self._ldaps else 389)
        self._tls = _VerifiedTls(config, self._host) if self._ldaps or config.start_tls else None
        self._cache = LoginCache(config.cache_seconds)
        self._pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="mirror-ldap")
        self._deadline = config.timeout_seconds * _DEADLINE_TIMEOUTS
        self._out = False  # the last attempt found the directory unavailable

    async def authenticate(self, user: str, password: str) -> Identity | None:
        if not acceptable_user(user) or not password:
            return None  # an empty password would be an "unauthenticated bind": a success
        try:
            secret = password.encode()
        except UnicodeEncodeError:
            return None
        cached = self._cache.get(user, secret)
        if cached is not None:
            return cached
        job = asyncio.get_running_loop().run_in_executor(self._pool, self._login, user, secret)
        try:
            groups = await asyncio.wait_for(job, self._deadline)
        except TimeoutError:
            outage = self._unavailable(f"no answer within {self._deadline:g} s")
            self._note_outage(outage)
            raise outage from None
        except DirectoryUnavailable as exc:
            self._note_outage(exc)
            raise
        self._note_answer()
        if groups is None:
            return None
        identity = Identity(user, groups)
        self._cache.put(user, secret, identity)
        return identity

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def reload_secret(self) -> str | None:
        """SIGHUP: read `bind_password_env` / `bind_password_file` again, for the binds
        from now on; "auth.ldap bind password (<what happened>)" (see
        `SecretSource.reread`), None when no bind password is configured."""
        source = self.config.bind_password_source
        if source is None:
            return None
        password, state = source.reread(self.config.bind_password, "auth.ldap: bind password")
        if state == "changed":
            self.config = dataclasses.replace(self.config, bind_password=password)
        return f"auth.ldap bind password ({state})"

    # --- on a worker thread -------------------------------------------------------------

    def _login(self, user: str, password: bytes) -> frozenset[str] | None:
        """The user's groups if the directory accepts the password; None if it refuses."""
        # A Server of its own each time: ldap3 marks an address it failed to reach as
        # unusable for the life of the Server object, which would outlast the outage.
        server = ldap3.Server(
            self._host,
            port=self._port,
            use_ssl=self._ldaps,
            tls=self._tls,
            connect_timeout=self.config.timeout_seconds,
            get_info=ldap3.NONE,
        )
        connection = ldap3.Connection(
            server,
            read_only=True,
            auto_referrals=False,  # never carry a password to a server a referral names
            raise_exceptions=False,
            # no receive_timeout (ldap3 takes whole seconds only): the socket keeps
            # connect_timeout, a float, for every exchange after the connect
        )
        try:
            connection.open(read_server_info=False)
            if self.config.start_tls:
                connection.start_tls(read_server_info=False)
            return self._login_on(connection, user, password)
        except (LDAPException, OSError) as exc:
            # ldap3 nests the cause in tuples; its last_error says it plainly
            reason = connection.last_error or str(exc) or type(exc).__name__
            raise self._unavailable(reason) from None
        finally:
            with contextlib.suppress(LDAPException, OSError):
                connection.unbind()

    def _login_on(
        self, connection: ldap3.Connection, user: str, password: bytes
    ) -> frozenset[str] | None:
        config = self.config
        if config.user_dn_template:
            dn: str | None = config.user_dn_template.replace("{user}", escape_rdn(user))
        else:
            self._bind_searcher(connection)
            dn = self._find_user(connection, user)
        if dn is None:
            # An unknown user costs a bind as well, so it answers like a wrong password.
            self._bind_user(
                connection, f"cn=hpc-mirror-no-such-user,{config.search_base}", password
            )
            return None
        if not self._bind_user(connection, dn, password):
            return None
        if not config.group_base:
            return frozenset()
        self._bind_searcher(connection)
        return self._groups(connection, user, dn)

    def _bind_user(self, connection: ldap3.Connection, dn: str, password: bytes) -> bool:
        if _bind(connection, dn, password):
            return True
        result = connection.result
        if result["result"] in _TROUBLE_CODES:
            raise self._unavailable(f"a user's bind was answered {result['description']}")
        return False

    def _bind_searcher(self, connection: ldap3.Connection) -> None:
        """Searches run as `bind_dn` when one is configured; else anonymously (before the
        user's bind) or as the user (after it)."""
        config = self.config
        if config.bind_dn and not _bind(connection, config.bind_dn, config.bind_password.encode()):
            described = connection.result["description"]
            raise self._unavailable(f"the bind as {config.bind_dn} was answered {described}")

    def _find_user(self, connection: ldap3.Connection, user: str) -> str | None:
        """The DN of the one entry `search_filter` finds; None for none or several."""
        search_filter = self.config.search_filter.replace("{user}", escape_filter_chars(user))
        found = self._search(connection, self.config.search_base, search_filter, [], 2)
        if len(found) != 1:
            if found:
                log.warning("search_filter matched several entries for one user name: refused")
            return None
        return str(found[0]["dn"])

    def _groups(self, connection: ldap3.Connection, user: str, dn: str) -> frozenset[str]:
        config = self.config
        group_filter = config.group_filter.replace("{user}", escape_filter_chars(user))
        group_filter = group_filter.replace("{dn}", escape_filter_chars(dn))
        attribute = config.group_attribute
        entries = self._search(connection, config.group_base, group_filter, [attribute], 0)
        return frozenset(
            str(value)
            for entry in entries
            for value in _values(entry.get("attributes", {}).get(attribute))
        )

    def _search(
        self,
        connection: ldap3.Connection,
        base: str,
        search_filter: str,
        attributes: list[str],
        size_limit: int,
    ) -> list[dict[str, Any]]:
        connection.search(
            base,
            search_filter,
            search_scope=ldap3.SUBTREE,
            attributes=attributes,
            size_limit=size_limit,
            time_limit=max(1, round(self.config.timeout_seconds)),
        )
        result = connection.result
        if result["result"] not in (0, _SIZE_LIMIT_EXCEEDED):
            raise self._unavailable(f"a search in {base} was answered {result['description']}")
        return [r for r in connection.response or () if r.get("type") == "searchResEntry"]

    # --- outages --------------------------------------------------------------------------

    def _unavailable(self, reason: str) -> DirectoryUnavailable:
        return DirectoryUnavailable(
            f"the LDAP directory {self.config.url} is unavailable: {reason}"
        )

    def _note_outage(self, exc: DirectoryUnavailable) -> None:
        if not self._out:
            self._out = True
            log.warning("%s; logins answer 503 until it answers again", exc.message)

    def _note_answer(self) -> None:
        if self._out:
            self._out = False
            log.info("the LDAP directory %s answers again", self.config.url)


class LoginCache:
    """Logins the directory accepted, reused for `seconds`. Keyed by the user and a keyed
    hash of the password (the key lives only in this process): no password is kept, and
    a different password never matches a cached one."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._key = secrets.token_bytes(32)
        self._entries: dict[tuple[str, bytes], tuple[float, Identity]] = {}

    def get(self, user: str, password: bytes) -> Identity | None:
        self._expire(time.monotonic())
        entry = self._entries.get(self._slot(user, password))
        return entry[1] if entry is not None else None

    def put(self, user: str, password: bytes, identity: Identity) -> None:
        if self._seconds <= 0:
            return
        slot = self._slot(user, password)
        self._entries.pop(slot, None)  # re-inserted last: entries stay in expiry order
        self._entries[slot] = (time.monotonic() + self._seconds, identity)

    def _slot(self, user: str, password: bytes) -> tuple[str, bytes]:
        return user, hmac.digest(self._key, password, hashlib.sha256)

    def _expire(self, now: float) -> None:
        while self._entries:
            oldest = next(iter(self._entries))
            if self._entries[oldest][0] > now:
                return
            del self._entries[oldest]


def acceptable_user(user: str) -> bool:
    """A name worth asking the directory about: not empty, not over MAX_USER_LENGTH, no
    control characters, encodable as UTF-8."""
    if not user or len(user) > MAX_USER_LENGTH:
        return False
    if any(unicodedata.category(c) == "Cc" for c in user):
        return False
    try:
        user.encode()
    except UnicodeEncodeError:
        return False
    return True


def _bind(connection: ldap3.Connection, dn: str, password: bytes) -> bool:
    """A simple bind with the password's bytes as they are: ldap3 would otherwise SASLprep
    a str, which maps some passwords to nothing, and an empty password is no check."""
    connection.authentication = ldap3.SIMPLE
    connection.user = dn
    connection.password = password
    try:
        return bool(connection.bind(read_server_info=False))
    finally:
        connection.password = None


def _values(value: object) -> list[object]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


class _VerifiedTls(ldap3.Tls):
    """TLS as the standard library does it for a client: the server's certificate checked
    against `ca_file` (or the system store) and its name against the URL's host; TLS 1.2
    at least. ldap3's own check is replaced because it matches the name after the fact."""

    def __init__(self, config: LdapConfig, host: str) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        cafile = str(config.ca_file) if config.ca_file else None
        self._context = ssl.create_default_context(cafile=cafile)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._host = host

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(
            connection.socket, server_hostname=self._host, do_handshake_on_connect=do_handshake
        )

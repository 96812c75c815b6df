"""`[auth] htpasswd`: users and bcrypt hashes as `htpasswd -B` writes them, a PasswordCheck.

bcrypt is slow on purpose (milliseconds at cost 5, a quarter second at 12), so it runs in a
thread, and a verified user + password is remembered for `REMEMBER_SECONDS`: clients that
send Basic credentials with every blob request pay for one bcrypt, not one per request.
The memory holds an HMAC of the password under a key made at start, never the password.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import bcrypt

from mirror.access.identity import Identity
from mirror.access.watched_file import WatchedFile

log = logging.getLogger(__name__)

REMEMBER_SECONDS = 60.0  # how long a verified user + password skips bcrypt
_REMEMBERED_MAX = 4096
_BCRYPT_RE = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_BCRYPT_MAX_BYTES = 72  # bcrypt reads no further; Apache's htpasswd truncates there too
_DEFAULT_COST = 10


class HtpasswdFile:
    """The users of one htpasswd file, read again when it changes."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._file: WatchedFile[dict[str, bytes]] = WatchedFile(path, self._parse, {}, clock=clock)
        self._clock = clock
        self._entries_seen: dict[str, bytes] | None = None
        self._mac_key = secrets.token_bytes(32)
        self._remembered: dict[tuple[str, bytes], float] = {}  # -> when it expires
        self._dummies: dict[int, bytes] = {}  # a hash per cost, for users that do not exist

    def close(self) -> None:
        """Nothing to release: the file is read when it changes, and closed each time."""

    def reload_secret(self) -> None:
        """Nothing to reload on SIGHUP: the file is read again when it changes."""

    async def authenticate(self, user: str, password: str) -> Identity | None:
        entries = self._file.current()
        if entries is not self._entries_seen:  # the file changed: every password may have
            self._entries_seen = entries
            self._remembered.clear()
        key = (user, hmac.digest(self._mac_key, password.encode(), hashlib.sha256))
        now = self._clock()
        if self._remembered.get(key, 0.0) > now:
            return Identity(user)
        stored = entries.get(user)
        # An unknown user costs the same bcrypt as a wrong password: no timing oracle.
        hashed = stored if stored is not None else await self._dummy(_usual_cost(entries))
        matched = await asyncio.to_thread(_checkpw, password, hashed)
        if not matched or stored is None:
            return None
        self._remember(key, now)
        return Identity(user)

    def _remember(self, key: tuple[str, bytes], now: float) -> None:
        if len(self._remembered) >= _REMEMBERED_MAX:
            self._remembered = {k: t for k, t in self._remembered.items() if t > now}
            if len(self._remembered) >= _REMEMBERED_MAX:
                self._remembered.clear()
        self._remembered[key] = now + REMEMBER_SECONDS

    async def _dummy(self, cost: int) -> bytes:
        dummy = self._dummies.get(cost)
        if dummy is None:
            salt = bcrypt.gensalt(rounds=cost)
            dummy = await asyncio.to_thread(bcrypt.hashpw, secrets.token_bytes(16), salt)
            self._dummies[cost] = dummy
        return dummy

    def _parse(self, text: str) -> dict[str, bytes]:
        entries = {}
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, colon, hashed = line.partition(":")
            if not colon or not user or not _BCRYPT_RE.fullmatch(hashed):
                # The line may hold a password (plain or weakly hashed): never logged.
                log.warning(
                    "%s line %d: not a bcrypt entry (write it with htpasswd -B); skipped",
                    self._path,
                    number,
                )
                continue
            entries[user] = hashed.encode()
        return entries


def _usual_cost(entries: dict[str, bytes]) -> int:
    """The cost most entries use, so that an unknown user takes as long as a known one."""
    costs = Counter(int(hashed[4:6]) for hashed in entries.values())
    return costs.most_common(1)[0][0] if costs else _DEFAULT_COST


def _checkpw(password: str, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password.encode()[:_BCRYPT_MAX_BYTES], hashed)
    except ValueError:  # a hash that looks like bcrypt but is not one: nobody matches it
        return False

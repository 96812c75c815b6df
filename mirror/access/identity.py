"""Who a request comes from, and the one interface every password source offers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified user and the groups they belong to; `user` None is anonymous."""

    user: str | None
    groups: frozenset[str] = frozenset()

    @property
    def anonymous(self) -> bool:
        return self.user is None

    def __str__(self) -> str:
        return self.user if self.user is not None else "-"


ANONYMOUS = Identity(None)


class PasswordCheck(Protocol):
    """A source of users: the htpasswd file, the LDAP directory."""

    async def authenticate(self, user: str, password: str) -> Identity | None:
        """The user with their groups if the password is theirs; None for an unknown user
        and for a wrong password alike (a caller must not be able to tell them apart).
        Raises `DirectoryUnavailable` when the source cannot answer (not a failed login)."""
        ...

    def close(self) -> None:
        """Release what the source holds (threads, connections) when the server stops."""
        ...

    def reload_secret(self) -> str | None:
        """SIGHUP: read the source's own secret again; what was reloaded and how, for the
        log line, or None when it has none."""
        ...

"""`[auth] groups_file`: group membership in Apache's AuthGroupFile format, read again
when it changes. Each line is `group: user1 user2 ...`; a group may span several lines."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from mirror.access.watched_file import WatchedFile

log = logging.getLogger(__name__)


class GroupsFile:
    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._file: WatchedFile[dict[str, frozenset[str]]] = WatchedFile(
            path, self._parse, {}, clock=clock
        )

    def groups_of(self, user: str) -> frozenset[str]:
        return self._file.current().get(user, frozenset())

    def _parse(self, text: str) -> dict[str, frozenset[str]]:
        groups_by_user: dict[str, set[str]] = defaultdict(set)
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            group, colon, members = line.partition(":")
            group = group.strip()
            if not colon or not group or any(c.isspace() for c in group):
                log.warning("%s line %d: not 'group: user1 user2 ...'; skipped", self._path, number)
                continue
            for user in members.split():
                groups_by_user[user].add(group)
        return {user: frozenset(groups) for user, groups in groups_by_user.items()}

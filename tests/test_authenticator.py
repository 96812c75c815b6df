"""Logins over every password source: the first that knows the user decides, groups come
from the source and the groups file together, failures are throttled, and a directory
that cannot answer is an outage, not a failed login."""

from __future__ import annotations

import asyncio

import pytest

from mirror.access.authenticator import Authenticator
from mirror.access.groups_file import GroupsFile
from mirror.access.htpasswd import HtpasswdFile
from mirror.access.identity import Identity
from mirror.access.login_throttle import FREE_FAILURES_PER_USER
from mirror.errors import DirectoryUnavailable, TooManyRequests
from tests.support.accounts import write_groups, write_htpasswd


class Directory:
    """A second password source standing in for the directory: it knows `carol` (in group
    `physics`), or is down."""

    def __init__(self) -> None:
        self.down = False
        self.asked: list[str] = []

    async def authenticate(self, user: str, password: str) -> Identity | None:
        self.asked.append(user)
        if self.down:
            raise DirectoryUnavailable("the directory did not answer")
        if (user, password) == ("carol", "carol pw"):
            return Identity("carol", frozenset({"physics"}))
        return None


@pytest.fixture
def directory() -> Directory:
    return Directory()


@pytest.fixture
def authenticator(tmp_path, directory) -> Authenticator:
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"alice": "alice pw"})
    groups = write_groups(tmp_path / "groups", {"licensed": ["alice", "carol"]})
    return Authenticator([HtpasswdFile(htpasswd), directory], GroupsFile(groups))


def login(authenticator: Authenticator, user: str, password: str) -> Identity | None:
    return asyncio.run(authenticator.login(user, password, "192.0.2.1"))


def test_every_source_is_asked_and_groups_are_merged(authenticator, directory):
    assert login(authenticator, "alice", "alice pw") == Identity("alice", frozenset({"licensed"}))
    assert directory.asked == []  # the htpasswd file knew her
    assert login(authenticator, "carol", "carol pw") == Identity(
        "carol", frozenset({"physics", "licensed"})
    )
    assert login(authenticator, "carol", "wrong") is None


def test_empty_passwords_and_absurd_names_never_reach_a_source(authenticator, directory):
    assert login(authenticator, "carol", "") is None
    assert login(authenticator, "x" * 300, "pw") is None
    assert login(authenticator, "", "pw") is None
    assert directory.asked == []


def test_a_directory_that_cannot_answer_is_no_failed_login(authenticator, directory):
    directory.down = True
    for _ in range(FREE_FAILURES_PER_USER + 2):
        with pytest.raises(DirectoryUnavailable):
            login(authenticator, "carol", "carol pw")
    assert login(authenticator, "alice", "alice pw") is not None  # the file still answers
    directory.down = False
    assert login(authenticator, "carol", "carol pw") is not None  # nothing was counted


def test_failures_are_throttled_even_for_the_right_password(authenticator):
    for _ in range(FREE_FAILURES_PER_USER):
        assert login(authenticator, "alice", "guess") is None
    with pytest.raises(TooManyRequests):
        login(authenticator, "alice", "alice pw")

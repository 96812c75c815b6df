"""The `[auth] htpasswd` file as Debian's `htpasswd` writes it: bcrypt entries checked,
other formats skipped with a warning, the file read again when it changes."""

from __future__ import annotations

import asyncio
import logging

import bcrypt
import pytest

from mirror.access import htpasswd as htpasswd_module
from mirror.access.htpasswd import REMEMBER_SECONDS, HtpasswdFile
from mirror.access.identity import Identity
from tests.support.accounts import htpasswd_add


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def bcrypt_calls(monkeypatch) -> list[bytes]:
    """The hashes bcrypt checked a password against, in order."""
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(htpasswd_module.bcrypt, "checkpw", counting)
    return calls


def login(source: HtpasswdFile, user: str, password: str) -> Identity | None:
    return asyncio.run(source.authenticate(user, password))


def test_bcrypt_entries_of_every_prefix_are_checked(tmp_path, clock):
    path = tmp_path / "htpasswd"
    htpasswd_add(path, "alice", "alice pw")  # $2y$, as htpasswd -B writes
    hashed = bcrypt.hashpw(b"bob pw", bcrypt.gensalt(rounds=4))  # $2b$
    path.write_text(
        path.read_text()
        + f"bob:{hashed.decode()}\n"
        + f"carol:{hashed.decode().replace('$2b$', '$2a$')}\n"
    )
    htpasswd_add(path, "dave", "d" * 80)  # bcrypt reads 72 bytes; so does Apache
    source = HtpasswdFile(path, clock)
    assert path.read_text().startswith("alice:$2y$05$")
    assert login(source, "alice", "alice pw") == Identity("alice")
    assert login(source, "alice", "alice pw ") is None
    assert login(source, "bob", "bob pw") == Identity("bob")
    assert login(source, "carol", "bob pw") == Identity("carol")
    assert login(source, "dave", "d" * 80) == Identity("dave")
    assert login(source, "nobody", "alice pw") is None


def test_other_formats_are_skipped_with_a_warning_that_does_not_quote_them(tmp_path, clock, caplog):
    path = tmp_path / "htpasswd"
    htpasswd_add(path, "alice", "alice pw")
    htpasswd_add(path, "md5user", "plain-secret-1", "-m")
    htpasswd_add(path, "shauser", "plain-secret-2", "-s")
    htpasswd_add(path, "plainuser", "plain-secret-3", "-p")
    path.write_text(path.read_text() + "# a comment\n\nno colon here\n")
    lines = path.read_text().splitlines()
    with caplog.at_level(logging.WARNING):
        source = HtpasswdFile(path, clock)
        assert login(source, "alice", "alice pw") == Identity("alice")
        assert login(source, "plainuser", "plain-secret-3") is None
        assert login(source, "md5user", "plain-secret-1") is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{path} line {n}: not a bcrypt entry (write it with htpasswd -B); skipped"
        for n in (2, 3, 4, 7)
    ]
    assert not any(line in caplog.text for line in lines[1:4] + ["plain-secret"])


def test_an_unknown_user_costs_a_bcrypt_check_like_a_known_one(tmp_path, clock, bcrypt_calls):
    path = tmp_path / "htpasswd"
    htpasswd_add(path, "alice", "alice pw")
    source = HtpasswdFile(path, clock)
    assert login(source, "alice", "wrong") is None
    assert login(source, "mallory", "wrong") is None
    assert len(bcrypt_calls) == 2
    known, dummy = bcrypt_calls
    assert dummy != known
    assert dummy[4:6] == known[4:6] == b"05"  # the cost the file's entries use


def test_a_verified_password_is_remembered_for_a_while(tmp_path, clock, bcrypt_calls):
    path = tmp_path / "htpasswd"
    htpasswd_add(path, "alice", "alice pw")
    source = HtpasswdFile(path, clock)
    for _ in range(3):
        assert login(source, "alice", "alice pw") == Identity("alice")
    assert len(bcrypt_calls) == 1
    assert login(source, "alice", "other") is None  # a different password is checked
    assert len(bcrypt_calls) == 2
    clock.now += REMEMBER_SECONDS + 1
    assert login(source, "alice", "alice pw") == Identity("alice")
    assert len(bcrypt_calls) == 3


def test_a_changed_file_is_read_again_at_most_once_a_second(tmp_path, clock):
    path = tmp_path / "htpasswd"
    htpasswd_add(path, "alice", "old pw")
    source = HtpasswdFile(path, clock)
    assert login(source, "alice", "old pw") == Identity("alice")
    htpasswd_add(path, "alice", "new pw")
    htpasswd_add(path, "bob", "bob pw")
    assert login(source, "bob", "bob pw") is None  # not looked at again yet
    clock.now += 1.0
    assert login(source, "bob", "bob pw") == Identity("bob")
    assert login(source, "alice", "new pw") == Identity("alice")
    assert login(source, "alice", "old pw") is None  # also no longer remembered


def test_a_vanished_or_broken_file_keeps_the_last_users(tmp_path, clock, caplog):
    path = tmp_path / "htpasswd"
    htpasswd_add(path, "alice", "alice pw")
    source = HtpasswdFile(path, clock)
    assert login(source, "alice", "alice pw") == Identity("alice")
    path.unlink()
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            clock.now += 1.0
            assert login(source, "alice", "wrong") is None
            assert login(source, "alice", "alice pw") == Identity("alice")
        path.write_bytes(b"alice:\xff\xfe broken\n")
        clock.now += 1.0
        assert login(source, "alice", "alice pw") == Identity("alice")
        htpasswd_add(path.with_name("fixed"), "bob", "bob pw")
        path.with_name("fixed").rename(path)
        clock.now += 1.0
        assert login(source, "bob", "bob pw") == Identity("bob")
        assert login(source, "alice", "alice pw") is None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"cannot read {path}: No such file or directory; keeping what was read before",
        f"{path} is not UTF-8 text; keeping what was read before",
    ]
    assert f"{path} is readable again" in caplog.text


def test_a_missing_file_at_start_has_no_users_until_it_appears(tmp_path, clock, caplog):
    path = tmp_path / "htpasswd"
    with caplog.at_level(logging.ERROR):
        source = HtpasswdFile(path, clock)
    assert caplog.messages == [f"cannot read {path}: No such file or directory; nothing read yet"]
    assert login(source, "alice", "alice pw") is None
    htpasswd_add(path, "alice", "alice pw")
    clock.now += 1.0
    assert login(source, "alice", "alice pw") == Identity("alice")

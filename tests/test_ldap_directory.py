"""The site directory as a password source, against a real OpenLDAP slapd on loopback.

Only the directory that accepts a connection and never answers is hand-written: a real slapd
cannot hang on purpose.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirror import config
from mirror.access.identity import Identity
from mirror.access.ldap_directory import LdapDirectory, LoginCache, acceptable_user
from mirror.config import LdapConfig
from mirror.errors import DirectoryUnavailable
from tests.support.processes import LOOPBACK
from tests.support.slapd import (
    ALICE,
    BOB,
    CAROL,
    GROUPS,
    ODD,
    PEOPLE,
    READER,
    USERS,
    Account,
    SlapdProcess,
    groups_of,
)
from tests.support.tls import make_loopback_ca

README = Path(__file__).parent.parent / "README.md"
BOTH_KINDS = (
    "(|(&(objectClass=posixGroup)(memberUid={user}))(&(objectClass=groupOfNames)(member={dn})))"
)
SECRETS = tuple(account.password for account in (*USERS, READER))


@pytest.fixture(scope="module")
def slapd(tmp_path_factory) -> Iterator[SlapdProcess]:
    """One directory for the tests that leave it running."""
    with SlapdProcess(tmp_path_factory.mktemp("slapd")) as server:
        yield server


@pytest.fixture
def own_slapd(tmp_path) -> Iterator[SlapdProcess]:
    """A directory this test alone uses, so it may stop it."""
    with SlapdProcess(tmp_path / "slapd") as server:
        yield server


@pytest.fixture
def directories() -> Iterator[list[LdapDirectory]]:
    made: list[LdapDirectory] = []
    yield made
    for directory in made:
        directory.close()


@pytest.fixture
def open_directory(directories):
    def make(ldap: LdapConfig) -> LdapDirectory:
        directories.append(LdapDirectory(ldap))
        return directories[-1]

    return make


def template_bind(url: str, **changes) -> LdapConfig:
    """Users bind as uid={user},ou=people; groups of both kinds."""
    ldap = LdapConfig(
        url=url,
        start_tls=False,
        user_dn_template=f"uid={{user}},{PEOPLE}",
        search_base="",
        search_filter="",
        bind_dn="",
        bind_password="",
        group_base=GROUPS,
        group_filter=BOTH_KINDS,
        group_attribute="cn",
        ca_file=None,
        timeout_seconds=5.0,
        cache_seconds=60.0,
    )
    return dataclasses.replace(ldap, **changes)


def search_bind(url: str, *, service: bool = True, **changes) -> LdapConfig:
    """Users found by (uid={user}) under ou=people, by the service account or anonymously."""
    search = {
        "user_dn_template": "",
        "search_base": PEOPLE,
        "search_filter": "(&(objectClass=inetOrgPerson)(uid={user}))",
        "bind_dn": READER.dn if service else "",
        "bind_password": READER.password if service else "",
    }
    return template_bind(url, **{**search, **changes})


def identity(account: Account) -> Identity:
    return Identity(account.name, groups_of(account))


# --- finding the user and their groups ----------------------------------------------------


@pytest.mark.parametrize("account", USERS, ids=lambda a: a.name)
async def test_template_bind_gives_user_and_groups(slapd, open_directory, account):
    directory = open_directory(template_bind(slapd.url))
    assert await directory.authenticate(account.name, account.password) == identity(account)


@pytest.mark.parametrize("service", [True, False], ids=["service-account", "anonymous"])
@pytest.mark.parametrize("account", USERS, ids=lambda a: a.name)
async def test_search_bind_gives_user_and_groups(slapd, open_directory, account, service):
    directory = open_directory(search_bind(slapd.url, service=service))
    assert await directory.authenticate(account.name, account.password) == identity(account)


async def test_search_runs_as_the_service_account(slapd, open_directory):
    directory = open_directory(search_bind(slapd.url))
    since = slapd.mark()
    await directory.authenticate(BOB.name, BOB.password)
    assert slapd.operations(since) == [
        f"BIND {READER.dn}",
        f"SRCH {PEOPLE}",
        f"BIND {BOB.dn}",
        f"BIND {READER.dn}",  # groups are read as the service account too
        f"SRCH {GROUPS}",
    ]


async def test_concurrent_logins_each_get_their_own_answer(slapd, open_directory):
    directory = open_directory(search_bind(slapd.url, cache_seconds=0))
    accounts = USERS * 5
    found = await asyncio.gather(*(directory.authenticate(a.name, a.password) for a in accounts))
    assert found == [identity(a) for a in accounts]


async def test_groups_by_posix_memberuid_and_by_groupofnames_member(slapd, open_directory):
    posix = open_directory(template_bind(slapd.url, group_filter="(memberUid={user})"))
    named = open_directory(template_bind(slapd.url, group_filter="(member={dn})"))
    assert (await posix.authenticate(ODD.name, ODD.password)).groups == {"hpc"}
    assert (await named.authenticate(ODD.name, ODD.password)).groups == {"chemists"}
    assert (await posix.authenticate(BOB.name, BOB.password)).groups == {"licensed"}
    assert (await named.authenticate(BOB.name, BOB.password)).groups == {"chemists"}


async def test_without_group_base_a_user_has_no_groups(slapd, open_directory):
    directory = open_directory(template_bind(slapd.url, group_base="", group_filter=""))
    assert await directory.authenticate(ALICE.name, ALICE.password) == Identity(ALICE.name)


@pytest.mark.parametrize("make", [template_bind, search_bind], ids=["template", "search"])
async def test_wrong_password_and_unknown_user_look_alike(slapd, open_directory, make):
    directory = open_directory(make(slapd.url))
    since = slapd.mark()
    assert await directory.authenticate(ALICE.name, BOB.password) is None
    wrong_password = slapd.operations(since)
    since = slapd.mark()
    assert await directory.authenticate("mallory", BOB.password) is None
    unknown_user = slapd.operations(since)
    # the same requests, one bind among them: an unknown user is not answered sooner
    assert [op.split()[0] for op in unknown_user] == [op.split()[0] for op in wrong_password]
    assert sum(op.startswith("BIND") for op in unknown_user) == 1 + (make is search_bind)


async def test_a_search_matching_several_entries_is_refused(slapd, open_directory):
    # (uid=*o*) with the user "o" finds bob, carol and the odd user
    directory = open_directory(search_bind(slapd.url, search_filter="(uid=*{user}*)"))
    assert await directory.authenticate("o", BOB.password) is None
    # found by "ob", bob is "ob": memberUid groups name "bob" and do not count, DN ones do
    assert await directory.authenticate("ob", BOB.password) == Identity("ob", {"chemists"})


async def test_a_wrong_service_password_is_the_directory_unavailable(slapd, open_directory):
    directory = open_directory(search_bind(slapd.url, bind_password=CAROL.password))
    with pytest.raises(DirectoryUnavailable, match=READER.dn) as caught:
        await directory.authenticate(ALICE.name, ALICE.password)
    assert caught.value.status == 503 and CAROL.password not in caught.value.message


# --- what never authenticates -------------------------------------------------------------


INJECTIONS = ["*", ")(uid=*", "admin)(|(uid=*", "ali*", "*ice", "alice)(uid=alice", "alice,ou=x"]


@pytest.mark.parametrize("name", INJECTIONS)
@pytest.mark.parametrize("make", [template_bind, search_bind], ids=["template", "search"])
async def test_ldap_injection_never_authenticates(slapd, open_directory, make, name):
    directory = open_directory(make(slapd.url))
    for account in USERS:
        assert await directory.authenticate(name, account.password) is None


@pytest.mark.parametrize(
    ("name", "password"),
    [
        (ALICE.name, ""),
        ("", ALICE.password),
        ("a" * 257, ALICE.password),
        ("alice\n", ALICE.password),
        ("alice\x00", ALICE.password),
        ("\udcff", ALICE.password),  # not encodable: undecodable bytes kept as a surrogate
        (ALICE.name, "\udcff"),
    ],
    ids=["empty-password", "empty-name", "long-name", "newline", "nul", "bad-name", "bad-pw"],
)
async def test_refused_without_asking_the_directory(slapd, open_directory, name, password):
    directory = open_directory(template_bind(slapd.url))
    since = slapd.mark()
    assert await directory.authenticate(name, password) is None
    assert await directory.authenticate(ALICE.name, ALICE.password) is not None
    assert slapd.connections(since) == 1  # the good login's: the log is live


async def test_a_password_saslprep_maps_to_nothing_is_no_unauthenticated_bind(
    slapd, open_directory
):
    # SASLprep maps U+00AD to nothing: sent through it, this password is empty, which is
    # an "unauthenticated bind" (a success at some directories; slapd refuses it as
    # unwilling, which would read as an outage). Its bytes are sent as they are.
    directory = open_directory(template_bind(slapd.url))
    assert await directory.authenticate(ALICE.name, "\u00ad") is None


def test_a_user_name_of_256_characters_is_asked_about():
    assert acceptable_user("a" * 256) and not acceptable_user("a" * 257)


# --- TLS ----------------------------------------------------------------------------------


async def test_starttls_and_ldaps_with_the_ca_trusted(slapd, open_directory):
    starttls = open_directory(template_bind(slapd.url, start_tls=True, ca_file=slapd.ca.ca_file))
    ldaps = open_directory(template_bind(slapd.ldaps_url, ca_file=slapd.ca.ca_file))
    since = slapd.mark()
    assert await starttls.authenticate(BOB.name, BOB.password) == identity(BOB)
    assert slapd.operations(since)[0] == "EXT"  # StartTLS before the bind
    assert await ldaps.authenticate(BOB.name, BOB.password) == identity(BOB)


@pytest.mark.parametrize("scheme", ["starttls", "ldaps"])
async def test_an_untrusted_certificate_is_unavailable_and_no_password_sent(
    slapd, open_directory, tmp_path, scheme
):
    other_ca = make_loopback_ca(tmp_path / "other-ca")
    ldap = (
        template_bind(slapd.url, start_tls=True, ca_file=other_ca.ca_file)
        if scheme == "starttls"
        else template_bind(slapd.ldaps_url, ca_file=other_ca.ca_file)
    )
    since = slapd.mark()
    with pytest.raises(DirectoryUnavailable, match="CERTIFICATE_VERIFY_FAILED") as caught:
        await open_directory(ldap).authenticate(ALICE.name, ALICE.password)
    assert ldap.url in caught.value.message and ALICE.password not in caught.value.message
    assert not [op for op in slapd.operations(since) if op.startswith("BIND")]


async def test_the_certificate_must_name_the_host(slapd, open_directory):
    # slapd's certificate names 127.0.0.1 only; the right CA does not make "localhost" it
    url = slapd.ldaps_url.replace(LOOPBACK, "localhost")
    directory = open_directory(template_bind(url, ca_file=slapd.ca.ca_file))
    with pytest.raises(DirectoryUnavailable, match="(?i)mismatch|refused"):
        await directory.authenticate(ALICE.name, ALICE.password)


# --- the cache ----------------------------------------------------------------------------


async def test_a_cached_login_survives_the_directory_stopping(own_slapd, open_directory):
    directory = open_directory(template_bind(own_slapd.url, cache_seconds=60))
    assert await directory.authenticate(ALICE.name, ALICE.password) == identity(ALICE)
    own_slapd.stop()
    assert await directory.authenticate(ALICE.name, ALICE.password) == identity(ALICE)
    for name, password in [(ALICE.name, BOB.password), (BOB.name, BOB.password)]:
        with pytest.raises(DirectoryUnavailable):
            await directory.authenticate(name, password)


async def test_a_wrong_password_after_a_right_one_is_refused(slapd, open_directory):
    directory = open_directory(template_bind(slapd.url, cache_seconds=60))
    assert await directory.authenticate(ALICE.name, ALICE.password) is not None
    since = slapd.mark()
    assert await directory.authenticate(ALICE.name, ALICE.password + "x") is None
    assert await directory.authenticate(ALICE.name, ALICE.password[:-1]) is None
    assert slapd.connections(since) == 2  # none of them answered from the cache


async def test_cached_logins_expire(own_slapd, open_directory):
    directory = open_directory(template_bind(own_slapd.url, cache_seconds=0.2))
    uncached = open_directory(template_bind(own_slapd.url, cache_seconds=0))
    assert await directory.authenticate(ALICE.name, ALICE.password) is not None
    assert await uncached.authenticate(ALICE.name, ALICE.password) is not None
    own_slapd.stop()
    with pytest.raises(DirectoryUnavailable):
        await uncached.authenticate(ALICE.name, ALICE.password)
    await asyncio.sleep(0.3)
    with pytest.raises(DirectoryUnavailable):
        await directory.authenticate(ALICE.name, ALICE.password)


def test_the_cache_keeps_no_password_and_drops_expired_entries(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("mirror.access.ldap_directory.time.monotonic", lambda: now[0])
    cache = LoginCache(10)
    cache.put("alice", b"pw-alice", Identity("alice"))
    cache.put("bob", b"pw-bob", Identity("bob"))
    assert all(b"pw-" not in slot[1] for slot in cache._entries)
    assert cache.get("alice", b"pw-alice") == Identity("alice")
    assert cache.get("alice", b"pw-bob") is None and cache.get("bob", b"pw-alice") is None
    now[0] = 110.0
    assert cache.get("bob", b"pw-bob") is None and not cache._entries


# --- outages ------------------------------------------------------------------------------


async def test_a_stopped_directory_is_unavailable_and_logged_once(
    own_slapd, open_directory, caplog
):
    caplog.set_level(logging.INFO, logger="mirror.access.ldap_directory")
    directory = open_directory(search_bind(own_slapd.url, cache_seconds=0))
    own_slapd.stop()
    for account in (ALICE, BOB, ALICE):
        with pytest.raises(DirectoryUnavailable) as caught:
            await directory.authenticate(account.name, account.password)
        assert caught.value.status == 503 and own_slapd.url in caught.value.message
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and own_slapd.url in warnings[0].getMessage()
    own_slapd.start()  # same port: the same directory object reaches it again
    assert await directory.authenticate(ALICE.name, ALICE.password) == identity(ALICE)
    assert "answers again" in caplog.records[-1].getMessage()
    own_slapd.stop()
    with pytest.raises(DirectoryUnavailable):
        await directory.authenticate(ALICE.name, ALICE.password)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    assert not any(secret in caplog.text for secret in SECRETS)


class SilentDirectory:
    """A listening socket nobody accepts from: the kernel completes the handshake, and the
    client's requests (or TLS hello) are never answered."""

    def __init__(self) -> None:
        self.sock = socket.create_server((LOOPBACK, 0), backlog=16)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("scheme", ["ldap", "starttls", "ldaps"])
async def test_a_directory_that_never_answers_times_out(open_directory, tmp_path, scheme):
    silent = SilentDirectory()
    ca = make_loopback_ca(tmp_path / "ca")
    url = f"{'ldaps' if scheme == 'ldaps' else 'ldap'}://{LOOPBACK}:{silent.port}"
    ldap = template_bind(
        url, start_tls=scheme == "starttls", ca_file=ca.ca_file, timeout_seconds=1.0
    )
    directory = open_directory(ldap)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    try:
        with pytest.raises(DirectoryUnavailable, match=re.escape(url)):
            await directory.authenticate(ALICE.name, ALICE.password)
    finally:
        ticker.cancel()
        silent.close()
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 30  # bounded by the timeout, generously for a loaded machine
    assert ticks >= 5  # the event loop kept running while the login waited


# --- the README's examples ----------------------------------------------------------------


def readme_examples() -> list[str]:
    text = README.read_text()
    section = text.split("### The site directory (LDAP)", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```toml\n(.*?)```", section, flags=re.S)


@pytest.mark.parametrize("number", [0, 1])
async def test_the_readme_examples_work(slapd, open_directory, tmp_path, number):
    example = readme_examples()[number]
    password_file = tmp_path / "ldap-reader.password"
    password_file.write_text(READER.password + "\n")
    site = example.replace("/etc/hpc-mirror/site-ca.pem", str(slapd.ca.ca_file))
    site = site.replace("/etc/hpc-mirror/ldap-reader.password", str(password_file))
    site = site.replace("ldap://ldap.example.org", slapd.url)
    site = site.replace("ldaps://ldap.example.org", slapd.ldaps_url)
    assert "ldap.example.org" not in site
    path = tmp_path / "site.toml"
    path.write_text(site)
    ldap = config.load(path).auth.ldap
    assert ldap is not None and ldap.ca_file is not None
    directory = open_directory(ldap)
    found = {a.name: await directory.authenticate(a.name, a.password) for a in (ALICE, BOB)}
    if "member={dn}" in site:
        assert found == {a.name: identity(a) for a in (ALICE, BOB)}
    else:
        posix_only = {ALICE.name: {"hpc"}, BOB.name: {"licensed"}}
        assert found == {name: Identity(name, frozenset(g)) for name, g in posix_only.items()}

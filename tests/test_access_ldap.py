"""Logins against the site directory, end to end: a real `mirror serve` whose `[auth.ldap]`
points at a real OpenLDAP slapd (StartTLS, the test CA), in front of the real registry. The
directory's groups decide who may pull a restricted repository."""

from __future__ import annotations

import os
import signal

import pytest
import requests

from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support.slapd import ALICE, BOB, GROUPS, PEOPLE, READER, SlapdProcess
from tests.support.tls import make_loopback_ca

SIF = f"{UPSTREAM_PREFIX}/sif/tool"


@pytest.fixture
def directory(tmp_path):
    ca = make_loopback_ca(tmp_path / "ca")
    with SlapdProcess(tmp_path / "slapd", ca=ca) as server:
        yield server, ca


@pytest.fixture
def gated(make_proxy, upstream, seeded, directory):
    server, ca = directory
    ldap = {
        "url": server.url,
        "start_tls": True,
        "ca_file": str(ca.ca_file),
        "user_dn_template": f"uid={{user}},{PEOPLE}",
        "group_base": GROUPS,
        "group_filter": "(&(objectClass=posixGroup)(memberUid={user}))",
    }
    rules = [{"repositories": ["sif/*"], "access": "restricted", "groups": ["licensed"]}]
    return make_proxy({"test": upstream_entry(upstream.url, rules=rules)}, auth={"ldap": ldap})


def token(proxy, account=None) -> requests.Response:
    auth = (account.name, account.password) if account else None
    return requests.get(
        f"{proxy.url}/token",
        params={"service": "hpc-mirror", "scope": f"repository:{SIF}:pull"},
        auth=auth,
        timeout=60,
    )


def pull(proxy, bearer: str) -> requests.Response:
    return requests.get(
        f"{proxy.url}/v2/{SIF}/manifests/1.0",
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=60,
    )


def test_the_directory_group_decides_who_pulls(gated, seeded):
    # BOB is in the posixGroup "licensed"; ALICE is not.
    bob = token(gated, BOB)
    assert bob.status_code == 200, bob.text
    got = pull(gated, bob.json()["token"])
    assert got.status_code == 200
    assert got.content == seeded["sif/tool:1.0"].manifest

    alice = token(gated, ALICE)
    assert alice.status_code == 200
    denied = pull(gated, alice.json()["token"])
    assert denied.status_code == 403
    assert denied.json()["errors"][0]["code"] == "DENIED"

    # Basic credentials straight on /v2/ go through the directory too.
    basic = requests.get(
        f"{gated.url}/v2/{SIF}/manifests/1.0", auth=(BOB.name, BOB.password), timeout=60
    )
    assert basic.status_code == 200


def test_a_wrong_directory_password_is_a_401_and_an_outage_a_503(gated, directory):
    wrong = token(gated, type(BOB)(BOB.name, BOB.dn, "not-the-password"))
    assert wrong.status_code == 401
    server, _ = directory
    server.stop()
    down = token(gated, ALICE)
    assert down.status_code == 503
    assert down.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_sighup_reads_a_rotated_bind_password_and_keeps_it_on_failure(
    make_proxy, upstream, seeded, directory, tmp_path
):
    """The service account that searches for users gets a new password in the directory
    and in `bind_password_file`: logins fail until SIGHUP, then work; a file that cannot
    be read at the next SIGHUP leaves the password in use."""
    server, ca = directory
    password_file = tmp_path / "ldap-reader.password"
    password_file.write_text(READER.password + "\n")
    ldap = {
        "url": server.url,
        "start_tls": True,
        "ca_file": str(ca.ca_file),
        "search_base": PEOPLE,
        "search_filter": "(&(objectClass=inetOrgPerson)(uid={user}))",
        "bind_dn": READER.dn,
        "bind_password_file": str(password_file),
        "group_base": GROUPS,
        "group_filter": "(&(objectClass=posixGroup)(memberUid={user}))",
        "cache_seconds": 0,  # every login asks the directory
    }
    rules = [{"repositories": ["sif/*"], "access": "restricted", "groups": ["licensed"]}]
    proxy = make_proxy({"test": upstream_entry(upstream.url, rules=rules)}, auth={"ldap": ldap})
    assert token(proxy, BOB).status_code == 200

    rotated = "reader-Rotated-9kLm"
    server.change_password(READER, rotated)
    password_file.write_text(rotated + "\n")
    assert token(proxy, BOB).status_code == 503  # the search bind fails: not reloaded yet
    assert proxy.pid is not None
    os.kill(proxy.pid, signal.SIGHUP)
    proxy.wait_log("SIGHUP: auth.ldap bind password (changed)")
    bob = token(proxy, BOB)
    assert bob.status_code == 200 and pull(proxy, bob.json()["token"]).status_code == 200
    assert token(proxy, ALICE).status_code == 200

    password_file.unlink()
    os.kill(proxy.pid, signal.SIGHUP)
    log = proxy.wait_log("SIGHUP: auth.ldap bind password (kept: see the error above)")
    assert (
        "ERROR mirror.config: auth.ldap: bind password not reloaded, still using the previous "
        f"one: bind_password_file: cannot read {password_file}: No such file or directory"
    ) in log
    bob = token(proxy, BOB)
    assert bob.status_code == 200 and pull(proxy, bob.json()["token"]).status_code == 200
    assert rotated not in log and READER.password not in log

"""Real clients log in to a mirror with logins and pull what their user may: skopeo, podman
(over HTTPS, trusting the site CA), containerd's `ctr --user` through a hosts.toml mirror,
and the oras Python SDK pulling a SIF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support.accounts import write_groups, write_htpasswd
from tests.support.clients import (
    Podman,
    containerd_hosts_dir,
    ctr_pull,
    oras_login_pull,
    oras_pull,
    skopeo_copy,
    skopeo_login,
)
from tests.support.containerd import ContainerdDaemon

ALICE = ("alice", "alice's pass phrase")
BOB = ("bob", "bob-pw-2024")
RULES = [
    {"repositories": ["sif/tool"], "access": "restricted", "groups": ["licensed"]},
    {"repositories": ["tools/beta"], "access": "restricted", "users": ["alice"]},
]


@pytest.fixture
def logins(tmp_path) -> dict:
    return {
        "htpasswd": str(write_htpasswd(tmp_path / "htpasswd", dict([ALICE, BOB]))),
        "groups_file": str(write_groups(tmp_path / "groups", {"licensed": ["alice"]})),
    }


@pytest.fixture
def gated(make_proxy, upstream, seeded, logins):
    return make_proxy({"test": upstream_entry(upstream.url, rules=RULES)}, auth=logins)


@pytest.fixture
def gated_tls(make_proxy, upstream, seeded, logins, listener_ca):
    """The same policy, served over HTTPS as a site deploys it."""
    return make_proxy(
        {"test": upstream_entry(upstream.url, rules=RULES)}, auth=logins, listener_ca=listener_ca
    )


def test_skopeo_logs_in_and_copies_what_its_user_may_pull(gated, seeded, tmp_path):
    alice_auth, bob_auth = tmp_path / "alice.json", tmp_path / "bob.json"
    wrong = skopeo_login(gated.host, ALICE[0], "not the password", tmp_path / "wrong.json")
    assert wrong.returncode != 0
    assert "invalid username/password" in wrong.stderr.lower()
    for (user, password), authfile in ((ALICE, alice_auth), (BOB, bob_auth)):
        result = skopeo_login(gated.host, user, password, authfile)
        assert result.returncode == 0, result.stderr
        assert "Login Succeeded" in result.stdout
    dest = tmp_path / "layout"
    skopeo_copy(
        gated.host, "tools/beta:2.0", f"oci:{dest}:pulled", "--src-authfile", str(alice_auth)
    )
    index = json.loads((dest / "index.json").read_text())
    assert index["manifests"][0]["digest"] == seeded["tools/beta:2.0"].digest
    for extra in (("--src-authfile", str(bob_auth)), ("--src-no-creds",)):
        with pytest.raises(AssertionError, match="(?i)denied|unauthorized|authentication"):
            skopeo_copy(gated.host, "tools/beta:2.0", f"dir:{tmp_path / 'no'}", *extra)
    skopeo_copy(gated.host, "tools/alpha:1.0", f"dir:{tmp_path / 'public'}", "--src-no-creds")


def test_the_oras_sdk_logs_in_and_pulls_a_licensed_sif(gated, seeded, tmp_path):
    image = seeded["sif/tool:1.0"]
    files = oras_login_pull(gated.host, *ALICE, "sif/tool:1.0", tmp_path / "alice")
    assert [Path(f).read_bytes() for f in files] == [image.sif.data]
    with pytest.raises(Exception):  # noqa: B017 - the SDK raises whatever its HTTP did
        oras_login_pull(gated.host, *BOB, "sif/tool:1.0", tmp_path / "bob")
    with pytest.raises(Exception):  # noqa: B017
        oras_pull(gated.host, "sif/tool:1.0", tmp_path / "anonymous")
    assert oras_pull(gated.host, "sif/zeroconfig:3.7", tmp_path / "public")


def test_podman_logs_in_over_https_and_pulls_what_its_user_may(
    gated_tls, listener_ca, seeded, tmp_path
):
    beta = f"{gated_tls.host}/{UPSTREAM_PREFIX}/tools/beta:2.0"
    with Podman(tmp_path / "alice", ca_file=listener_ca.ca_file) as podman:
        assert not podman.login(gated_tls.host, ALICE[0], "not the password", check=False)
        assert podman.login(gated_tls.host, *ALICE)
        assert podman.pull(beta) == seeded["tools/beta:2.0"].digest
    with Podman(tmp_path / "bob", ca_file=listener_ca.ca_file) as podman:
        assert podman.login(gated_tls.host, *BOB)
        denied = podman.run("pull", "--cert-dir", str(podman.cert_dir), beta, check=False)
        assert denied.returncode != 0
        assert "denied" in denied.stderr.lower() or "unauthorized" in denied.stderr.lower()
        public = f"{gated_tls.host}/{UPSTREAM_PREFIX}/tools/alpha:1.0"
        assert podman.pull(public) == seeded["tools/alpha:1.0"].digest


def test_ctr_with_user_pulls_through_a_hosts_toml_mirror(gated_tls, listener_ca, seeded, tmp_path):
    """containerd asks the mirror with `?ns=` and answers its challenge with `--user`; the
    token's scope is the canonical name the challenge gave, so it fits the `ns` route."""
    hosts = containerd_hosts_dir(
        tmp_path / "certs.d", UPSTREAM_PREFIX, gated_tls.url, listener_ca.ca_file
    )
    reference = f"{UPSTREAM_PREFIX}/tools/beta:2.0"
    with ContainerdDaemon(tmp_path / "ctrd") as daemon:
        with pytest.raises(AssertionError, match="403 Forbidden"):
            ctr_pull(daemon, reference, hosts, user=BOB[0], password=BOB[1])
        digest = ctr_pull(daemon, reference, hosts, user=ALICE[0], password=ALICE[1])
    assert digest == seeded["tools/beta:2.0"].digest
    assert f"/v2/tools/beta/manifests/2.0?ns={UPSTREAM_PREFIX}" in gated_tls.log()

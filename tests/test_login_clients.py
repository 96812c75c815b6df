"""Real clients log in to a mirror with logins and pull what their user may: skopeo
(containers/image, as podman) and the oras Python SDK pulling a SIF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import upstream_entry
from tests.support.accounts import write_groups, write_htpasswd
from tests.support.clients import oras_login_pull, oras_pull, skopeo_copy, skopeo_login

ALICE = ("alice", "alice's pass phrase")
BOB = ("bob", "bob-pw-2024")
RULES = [
    {"repositories": ["sif/tool"], "access": "restricted", "groups": ["licensed"]},
    {"repositories": ["tools/beta"], "access": "restricted", "users": ["alice"]},
]


@pytest.fixture
def gated(make_proxy, upstream, seeded, tmp_path):
    auth = {
        "htpasswd": str(write_htpasswd(tmp_path / "htpasswd", dict([ALICE, BOB]))),
        "groups_file": str(write_groups(tmp_path / "groups", {"licensed": ["alice"]})),
    }
    return make_proxy({"test": upstream_entry(upstream.url, rules=RULES)}, auth=auth)


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

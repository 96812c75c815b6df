"""The local namespace's ground rules: its `[local]` table, how its names route, who may
write where, and what tokens and the gate grant for pushes."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import bcrypt
import jwt
import pytest
from aiohttp.test_utils import make_mocked_request

from mirror import config
from mirror.access.authenticator import Authenticator
from mirror.access.identity import ANONYMOUS, Identity
from mirror.access.policy import AccessPolicy
from mirror.access.tokens import TokenSigner, requested_access
from mirror.config_toml import to_toml
from mirror.errors import ConfigError, NameInvalid, PushDenied, Unauthorized
from mirror.proxy.access_gate import AccessGate
from mirror.proxy.routing import Router
from mirror.reference import Repository

ALICE = Identity("alice", frozenset({"chem"}))
BOB = Identity("bob")
ROOT = Identity("root")


def _site(tmp_path: Path, local: str, auth: bool = True) -> Path:
    if not (tmp_path / "htpasswd").exists():
        (tmp_path / "htpasswd").write_text("")
    (tmp_path / "groups").write_text("chem: alice\n")
    auth_table = (
        f'[auth]\nhtpasswd = "{tmp_path / "htpasswd"}"\ngroups_file = "{tmp_path / "groups"}"\n'
        if auth
        else ""
    )
    site = tmp_path / "site.toml"
    site.write_text(
        f"{auth_table}[local]\n{local}\n"
        '[upstreams.hub]\nurl = "https://hub.example"\nprefix = "hub.example"\ndefault = true\n'
        'library_namespace = "library"\n'
    )
    return site


def _load(tmp_path: Path, local: str, auth: bool = True) -> config.Config:
    return config.load(_site(tmp_path, local, auth))


def test_local_is_off_by_default():
    loaded = config.load()
    assert not loaded.local.enabled
    assert loaded.local.quota is None and loaded.local.upload_ttl_hours == 24
    assert Router(loaded).route("local/alice/tool") == Repository("docker.io", "local/alice/tool")


def test_local_table_is_read_and_written_back(tmp_path):
    loaded = _load(
        tmp_path,
        'prefix = "local"\nadmins = ["root"]\naccess = "restricted"\ngroups = ["chem"]\n'
        'quota = "50G"\nupload_ttl_hours = 6',
    )
    local = loaded.local
    assert (local.prefix, local.admins, local.quota) == ("local", {"root"}, 50 * 1024**3)
    assert local.access.groups == {"chem"} and local.upload_ttl_hours == 6
    again = tmp_path / "again.toml"
    again.write_text(to_toml(loaded))
    assert config.load(again).local == local


@pytest.mark.parametrize(
    ("local", "auth", "problem"),
    [
        ('prefix = "local"', False, "local.prefix: pushes need to know who pushes"),
        ('prefix = "sif"', True, "is a name of the SIF namespace"),
        ('prefix = "hub.example"', True, "is also upstreams.hub.prefix"),
        ('prefix = "Local/x"', True, "local.prefix: 'Local/x' is not a repository name"),
        ('prefix = "local"\nquota = "lots"', True, "local.quota:"),
        ('prefix = "local"\nupload_ttl_hours = 0', True, "local.upload_ttl_hours: must be > 0"),
        ('prefix = "local"\naccess = "restricted"', True, "needs users or groups"),
        ('prefix = "local"\nadmins = [""]', True, "local.admins:"),
    ],
)
def test_a_bad_local_table_names_the_key(tmp_path, local, auth, problem):
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, local, auth)
    assert problem in str(raised.value) and str(tmp_path / "site.toml") in str(raised.value)


def test_local_names_route_to_the_local_namespace_never_upstream(tmp_path):
    router = Router(_load(tmp_path, 'prefix = "local"'))
    repo = router.route("local/alice/tools/md")
    assert repo == Repository("local", "alice/tools/md") and router.is_local(repo)
    assert not router.is_local(router.route("hub.example/library/alpine"))
    assert not router.is_local(router.route("alpine"))
    converted = router.route("sif/local/alice/tool")
    assert router.source_of(converted) == Repository("local", "alice/tool")
    for bad in ("local/alice", "local/Alice/x", "local/alice/../x"):
        with pytest.raises(NameInvalid):
            router.route(bad)


@pytest.mark.parametrize(
    ("identity", "name", "may_push"),
    [
        (ALICE, "alice/tool", True),
        (ALICE, "chem/app", True),  # a group she is in
        (ALICE, "bob/tool", False),
        (BOB, "chem/app", False),
        (ROOT, "bob/tool", True),  # admins write anywhere
        (ANONYMOUS, "alice/tool", False),
    ],
)
def test_who_may_write_where(tmp_path, identity, name, may_push):
    loaded = _load(tmp_path, 'prefix = "local"\nadmins = ["root"]')
    policy = AccessPolicy(loaded.upstreams, loaded.local)
    assert policy.may_push(identity, Repository("local", name)) is may_push
    assert not policy.may_push(ROOT, Repository("hub.example", "library/alpine"))


def test_reading_follows_local_access_and_writers_always_read(tmp_path):
    loaded = _load(tmp_path, 'prefix = "local"\naccess = "restricted"\nusers = ["carol"]')
    policy = AccessPolicy(loaded.upstreams, loaded.local)
    repo = Repository("local", "alice/tool")
    assert policy.protects_anything and not policy.is_public(repo)
    assert policy.may_pull(Identity("carol"), repo)
    assert policy.may_pull(ALICE, repo)  # her own namespace
    assert not policy.may_pull(BOB, repo) and not policy.may_pull(ANONYMOUS, repo)


def test_tokens_grant_push_only_to_writers(tmp_path):
    loaded = _load(tmp_path, 'prefix = "local"')
    signer = TokenSigner(b"k" * 32, 300)
    gate = AccessGate(
        AccessPolicy(loaded.upstreams, loaded.local),
        Authenticator([]),
        signer,
        Router(loaded),
    )
    scopes = ["repository:local/alice/tool:pull,push repository:local/bob/tool:pull,push"]
    grant = signer.verify(gate.issue(ALICE, scopes).token)
    assert grant.pullable == {"local/alice/tool", "local/bob/tool"}  # access is anonymous
    assert grant.pushable == {"local/alice/tool"}
    claims = jwt.decode(gate.issue(ALICE, scopes).token, options={"verify_signature": False})
    assert {
        "type": "repository",
        "name": "local/alice/tool",
        "actions": ["pull", "delete", "push"],
    } in claims["access"]
    assert [r.name for r in requested_access(["repository:x:delete"])] == ["x"]


def _gate_with_alice(tmp_path: Path) -> tuple[AccessGate, TokenSigner]:
    (tmp_path / "htpasswd").write_text(
        "alice:" + bcrypt.hashpw(b"alice pw", bcrypt.gensalt(4)).decode() + "\n"
    )
    loaded = _load(tmp_path, 'prefix = "local"')
    signer = TokenSigner(b"k" * 32, 300)
    gate = AccessGate(
        AccessPolicy(loaded.upstreams, loaded.local),
        Authenticator.from_config(loaded.auth),
        signer,
        Router(loaded),
        fallback_host="mirror.example.org:5000",
    )
    return gate, signer


def _request(authorization: str | None) -> object:
    headers = {"Authorization": authorization} if authorization else {}
    return make_mocked_request("POST", "/v2/local/alice/tool/blobs/uploads/", headers=headers)


def test_the_gate_challenges_for_pull_push_and_denies_other_namespaces(tmp_path):
    gate, signer = _gate_with_alice(tmp_path)
    own, other = Repository("local", "alice/tool"), Repository("local", "bob/tool")
    with pytest.raises(Unauthorized) as raised:
        asyncio.run(gate.check_push(_request(None), own))
    assert (
        'scope="repository:local/alice/tool:pull,push"' in raised.value.headers["WWW-Authenticate"]
    )
    basic = "Basic " + base64.b64encode(b"alice:alice pw").decode()
    assert asyncio.run(gate.check_push(_request(basic), own)).identity.user == "alice"
    with pytest.raises(PushDenied):
        asyncio.run(gate.check_push(_request(basic), other))
    pull_only = signer.issue(Identity("alice"), ["local/alice/tool"]).token
    with pytest.raises(Unauthorized) as raised:  # a pull token: fetch one with push
        asyncio.run(gate.check_push(_request(f"Bearer {pull_only}"), own))
    assert "pull,push" in raised.value.headers["WWW-Authenticate"]
    writer = signer.issue(Identity("alice"), [], ["local/alice/tool"]).token
    assert asyncio.run(gate.check_push(_request(f"Bearer {writer}"), own)).identity.user == "alice"

"""Signed bearer tokens: what they say, what makes one invalid, and the one signing key
every instance on the cluster shares (created race-free under the cache root)."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import jwt
import pytest

from mirror.access.identity import ANONYMOUS, Identity
from mirror.access.tokens import (
    InvalidToken,
    TokenKeyError,
    TokenSigner,
    load_or_create_key,
    requested_pulls,
)
from mirror.cache.store import ContentStore

KEY = bytes(range(32))
ALICE = Identity("alice", frozenset({"licensed", "staff"}))


def test_a_token_carries_who_and_what_and_expires():
    now = [1_700_000_000.0]
    signer = TokenSigner(KEY, 300, clock=lambda: now[0])
    issued = signer.issue(ALICE, ["up.test/sif/tool", "up.test/a", "up.test/a"])
    assert (issued.expires_in, issued.issued_at) == (300, "2023-11-14T22:13:20Z")
    other_instance = TokenSigner(KEY, 300, clock=lambda: now[0] + 1)
    grant = other_instance.verify(issued.token)
    assert grant.identity == ALICE
    assert grant.pullable == {"up.test/sif/tool", "up.test/a"}
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert claims["access"] == [
        {"type": "repository", "name": "up.test/a", "actions": ["pull"]},
        {"type": "repository", "name": "up.test/sif/tool", "actions": ["pull"]},
    ]
    assert claims["exp"] - claims["iat"] == 300 and claims["nbf"] == claims["iat"]
    anonymous = signer.issue(ANONYMOUS, [])
    assert "sub" not in jwt.decode(anonymous.token, options={"verify_signature": False})
    assert other_instance.verify(anonymous.token).identity == ANONYMOUS
    now[0] += 300 + 29  # within the allowance for clocks of other nodes
    assert signer.verify(issued.token).identity == ALICE
    now[0] += 1
    with pytest.raises(InvalidToken, match="expired"):
        signer.verify(issued.token)
    with pytest.raises(InvalidToken, match="not valid yet"):
        TokenSigner(KEY, 300, clock=lambda: now[0] - 1000).verify(issued.token)


@pytest.mark.parametrize(
    "token",
    [
        jwt.encode({"iss": "hpc-mirror", "aud": "hpc-mirror", "exp": 4e9}, KEY),  # no iat/nbf/jti
        jwt.encode(
            {"iss": "hpc-mirror", "aud": "hpc-mirror", "iat": 1, "nbf": 1, "exp": 4e9, "jti": "j"},
            KEY + KEY,
            algorithm="HS512",
        ),
        jwt.encode(
            {
                "iss": "hpc-mirror",
                "aud": "hpc-mirror",
                "iat": 1,
                "nbf": 1,
                "exp": 4e9,
                "jti": "j",
                "groups": "licensed",  # not a list
            },
            KEY,
        ),
        "x" * 20_000,
    ],
    ids=["claims missing", "other algorithm", "malformed groups", "oversized"],
)
def test_tokens_not_made_here_are_invalid(token):
    with pytest.raises(InvalidToken):
        TokenSigner(KEY, 300).verify(token)


def test_requested_pulls_reads_every_scope_spelling():
    scopes = [
        "repository:up.test/a:pull repository:b:pull,push",
        "repository:localhost:5000/c:pull",
        "repository(plugin):d:pull",
        "repository:e:push",
        "repository:f:*",
        "registry:catalog:*",
        "nonsense",
    ]
    assert requested_pulls(scopes) == ["up.test/a", "b", "localhost:5000/c", "d", "f"]


def test_the_signing_key_is_made_once_private_under_the_cache_root(tmp_path):
    path = ContentStore(tmp_path / "cache").token_key_path()
    assert path.parent.parent == tmp_path / "cache"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert os.listdir(path.parent) == [path.name]


def _create(path: str, start: Any, keys: Any) -> None:
    start.wait()
    keys.put(load_or_create_key(Path(path)))


def test_instances_starting_at_once_all_get_the_same_key(tmp_path):
    path = tmp_path / "cache" / "auth" / "token-signing.key"
    context = multiprocessing.get_context("fork")
    start, keys = context.Event(), context.Queue()
    processes = [context.Process(target=_create, args=(str(path), start, keys)) for _ in range(8)]
    for process in processes:
        process.start()
    start.set()
    found = {keys.get(timeout=60) for _ in processes}
    for process in processes:
        process.join(timeout=60)
    assert len(found) == 1
    assert bytes.fromhex(path.read_text()) in found
    assert os.listdir(path.parent) == [path.name]  # no temp file left behind


def test_a_key_file_that_holds_no_key_stops_the_start(tmp_path):
    path = tmp_path / "token-signing.key"
    path.write_text("not hex\n")
    with pytest.raises(TokenKeyError, match="remove it and restart every instance"):
        load_or_create_key(path)

"""Who may pull what, over HTTP: a real `mirror serve` with logins (an htpasswd file written
by Debian's `htpasswd -B`, a groups file) in front of the real registry, asked with plain
HTTP the way OCI clients ask: challenges, `/token`, bearer tokens and Basic credentials."""

from __future__ import annotations

import base64
import json
import re
import time

import jwt
import pytest
import requests

from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support.accounts import write_groups, write_htpasswd

ALICE = ("alice", "correct horse alice")  # in group "licensed"
BOB = ("bob", "bob's battery staple")
RULES = [
    {"repositories": ["sif/*"], "access": "restricted", "groups": ["licensed"]},
    {"repositories": ["tools/beta"], "access": "restricted", "users": ["alice"]},
    {"repositories": ["legacy/*"], "access": "authenticated"},
]
SIF = f"{UPSTREAM_PREFIX}/sif/tool"  # canonical names
ALPHA = f"{UPSTREAM_PREFIX}/tools/alpha"
BETA = f"{UPSTREAM_PREFIX}/tools/beta"
LEGACY = f"{UPSTREAM_PREFIX}/legacy/dockerimg"


@pytest.fixture
def auth(tmp_path) -> dict:
    return {
        "htpasswd": str(write_htpasswd(tmp_path / "htpasswd", dict([ALICE, BOB]))),
        "groups_file": str(write_groups(tmp_path / "groups", {"licensed": ["alice"]})),
    }


@pytest.fixture
def make_gated(make_proxy, upstream, seeded, auth):
    def make(**options):
        entry = upstream_entry(upstream.url, rules=RULES, **options.pop("upstream", {}))
        return make_proxy({"test": entry}, auth={**auth, **options.pop("auth", {})}, **options)

    return make


@pytest.fixture
def gated(make_gated):
    return make_gated()


def get(proxy, path: str, *, token: str | None = None, auth=None, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{proxy.url}{path}", headers=headers, auth=auth, params=params, timeout=60)


def fetch_token(proxy, *scopes: str, auth=None) -> str:
    query = [("service", "hpc-mirror"), *(("scope", scope) for scope in scopes)]
    response = requests.get(f"{proxy.url}/token", params=query, auth=auth, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["issued_at"])
    return body["token"]


def challenge(response: requests.Response) -> dict[str, str]:
    scheme, _, params = response.headers["WWW-Authenticate"].partition(" ")
    assert scheme == "Bearer"
    return dict(re.findall(r'(\w+)="([^"]*)"', params))


def error_code(response: requests.Response) -> str:
    return response.json()["errors"][0]["code"]


def manifest_path(name: str, reference: str) -> str:
    return f"/v2/{UPSTREAM_PREFIX}/{name}/manifests/{reference}"


def sif_blob_path(seeded) -> tuple[str, bytes]:
    image = seeded["sif/tool:1.0"]
    return f"/v2/{SIF}/blobs/{image.layers[0]['digest']}", image.sif.data


def test_without_auth_the_mirror_is_as_before(proxy):
    root = get(proxy, "/v2/")
    assert root.status_code == 200
    assert "WWW-Authenticate" not in root.headers
    assert get(proxy, manifest_path("sif/tool", "1.0")).status_code == 200
    assert get(proxy, "/token").status_code == 404


def test_v2_root_asks_for_credentials_and_accepts_any_valid(gated):
    root = get(gated, "/v2/")
    assert root.status_code == 401
    assert challenge(root) == {"realm": f"{gated.url}/token", "service": "hpc-mirror"}
    assert get(gated, "/v2/", auth=ALICE).status_code == 200
    assert get(gated, "/v2/", token=fetch_token(gated, auth=ALICE)).status_code == 200
    assert get(gated, "/v2/", token=fetch_token(gated)).status_code == 200  # anonymous token
    assert get(gated, "/v2/", auth=(ALICE[0], "wrong")).status_code == 401


@pytest.mark.parametrize(
    ("path", "query"),
    [
        (f"/v2/{SIF}/manifests/1.0", {}),
        ("/v2/sif/tool/manifests/1.0", {}),  # the default upstream
        ("/v2/sif/tool/manifests/1.0", {"ns": UPSTREAM_PREFIX}),  # containerd's mirror path
    ],
)
def test_a_protected_repository_is_challenged_by_its_canonical_name(make_gated, path, query):
    # With the default [sif] namespace, /v2/sif/... would be the SIF of up.test/tool.
    gated = make_gated(sif={"namespace": "converted"})
    response = get(gated, path, **query)
    assert response.status_code == 401
    assert error_code(response) == "UNAUTHORIZED"
    assert challenge(response) == {
        "realm": f"{gated.url}/token",
        "service": "hpc-mirror",
        "scope": f"repository:{SIF}:pull",
    }


def test_the_token_flow_pulls_a_private_artifact(gated, seeded):
    # A client may spell the scope as it routes: without the prefix, or several at once.
    token = fetch_token(gated, f"repository:{SIF}:pull repository:tools/alpha:pull", auth=ALICE)
    assert get(gated, manifest_path("sif/tool", "1.0"), token=token).content == (
        seeded["sif/tool:1.0"].manifest
    )
    path, data = sif_blob_path(seeded)
    assert get(gated, path, token=token).content == data
    assert get(gated, manifest_path("tools/alpha", "1.0"), token=token).status_code == 200
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["sub"] == "alice" and payload["groups"] == ["licensed"]
    assert payload["iss"] == payload["aud"] == "hpc-mirror"
    assert payload["exp"] - payload["iat"] == 300 and payload["jti"]
    assert sorted(entry["name"] for entry in payload["access"]) == [SIF, ALPHA]
    assert payload["access"][0]["type"] == "repository"
    assert payload["access"][0]["actions"] == ["pull"]


def test_what_each_caller_gets(gated):
    sif = manifest_path("sif/tool", "1.0")
    # Public: anyone, with or without a token.
    assert get(gated, manifest_path("tools/alpha", "1.0")).status_code == 200
    assert get(gated, manifest_path("tools/alpha", "1.0"), token=fetch_token(gated)).ok
    # Basic credentials straight on /v2/: the policy decides.
    assert get(gated, sif, auth=ALICE).status_code == 200
    denied = get(gated, sif, auth=BOB)
    assert (denied.status_code, error_code(denied)) == (403, "DENIED")
    assert get(gated, manifest_path("legacy/dockerimg", "v2"), auth=BOB).status_code == 200
    assert get(gated, manifest_path("legacy/dockerimg", "v2")).status_code == 401
    assert get(gated, manifest_path("tools/beta", "2.0"), auth=ALICE).status_code == 200
    assert get(gated, manifest_path("tools/beta", "2.0"), auth=BOB).status_code == 403
    # A token lacking the scope: a fresh token helps alice (401 with the scope), not bob.
    alice_other = get(gated, sif, token=fetch_token(gated, f"repository:{ALPHA}:pull", auth=ALICE))
    assert alice_other.status_code == 401
    assert challenge(alice_other)["scope"] == f"repository:{SIF}:pull"
    bob = get(gated, sif, token=fetch_token(gated, f"repository:{SIF}:pull", auth=BOB))
    assert (bob.status_code, error_code(bob)) == (403, "DENIED")
    anonymous = get(gated, sif, token=fetch_token(gated, f"repository:{SIF}:pull"))
    assert anonymous.status_code == 401
    assert challenge(anonymous)["scope"] == f"repository:{SIF}:pull"


def _same_answer(first: requests.Response, second: requests.Response) -> None:
    assert first.status_code == second.status_code == 401
    assert first.content == second.content
    assert first.headers.get("WWW-Authenticate") == second.headers.get("WWW-Authenticate")


def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(gated):
    wrong, unknown = (ALICE[0], "not her password"), ("mallory", "not her password")
    for path in ("/token", "/v2/", manifest_path("sif/tool", "1.0")):
        _same_answer(get(gated, path, auth=wrong), get(gated, path, auth=unknown))
    form = {"grant_type": "password", "service": "hpc-mirror"}
    _same_answer(
        requests.post(f"{gated.url}/token", data={**form, "username": wrong[0], "password": "x"}),
        requests.post(f"{gated.url}/token", data={**form, "username": unknown[0], "password": "x"}),
    )


def _signing_key(proxy) -> bytes:
    path = proxy.cache_root / "auth" / "token-signing.key"
    assert path.stat().st_mode & 0o777 == 0o600
    return bytes.fromhex(path.read_text().strip())


def _claims(**changes) -> dict:
    now = int(time.time())
    claims = {
        "iss": "hpc-mirror",
        "aud": "hpc-mirror",
        "sub": "alice",
        "groups": ["licensed"],
        "access": [{"type": "repository", "name": SIF, "actions": ["pull"]}],
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "x",
    }
    return {**claims, **changes}


def _with_payload(token: str, claims: dict) -> str:
    header, _, signature = token.split(".")
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


def test_tampered_expired_and_foreign_tokens_get_401(gated):
    key = _signing_key(gated)
    bob_token = fetch_token(gated, f"repository:{SIF}:pull", auth=BOB)
    now = int(time.time())
    bad_tokens = {
        "payload changed": _with_payload(bob_token, _claims(sub="alice")),
        "signature changed": bob_token[:-4] + ("AAAA" if bob_token[-4:] != "AAAA" else "BBBB"),
        "expired": jwt.encode(_claims(iat=now - 900, nbf=now - 900, exp=now - 600), key),
        "not yet valid": jwt.encode(_claims(nbf=now + 600, exp=now + 900), key),
        "other audience": jwt.encode(_claims(aud="registry.example"), key),
        "other issuer": jwt.encode(_claims(iss="someone"), key),
        "other key": jwt.encode(_claims(), b"k" * 32),
        "unsigned": jwt.encode(_claims(), None, algorithm="none"),
        "no expiry": jwt.encode({k: v for k, v in _claims().items() if k != "exp"}, key),
        "not a token": "garbage",
    }
    assert get(gated, manifest_path("sif/tool", "1.0"), token=jwt.encode(_claims(), key)).ok
    for what, token in bad_tokens.items():
        response = get(gated, manifest_path("sif/tool", "1.0"), token=token)
        assert response.status_code == 401, what
        assert challenge(response)["error"] == "invalid_token", what
        assert challenge(response)["scope"] == f"repository:{SIF}:pull", what
    # A token is no password: it buys no new token.
    renewed = requests.get(
        f"{gated.url}/token",
        params={"scope": f"repository:{SIF}:pull"},
        headers={"Authorization": f"Bearer {jwt.encode(_claims(), key)}"},
        timeout=60,
    ).json()["token"]
    assert jwt.decode(renewed, options={"verify_signature": False})["access"] == []


def test_post_token_takes_the_oauth2_password_grant(gated):
    url = f"{gated.url}/token"
    form = {"grant_type": "password", "service": "hpc-mirror", "client_id": "containerd-client"}
    scope = {"scope": f"repository:{SIF}:pull repository:sif/other:pull"}
    response = requests.post(url, data={**form, **scope, "username": "alice", "password": ALICE[1]})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    token = response.json()["access_token"]
    assert get(gated, manifest_path("sif/tool", "1.0"), token=token).status_code == 200
    wrong = requests.post(url, data={**form, "username": "alice", "password": "wrong"})
    assert wrong.status_code == 401
    refresh = requests.post(url, data={"grant_type": "refresh_token", "refresh_token": "x"})
    assert (refresh.status_code, refresh.json()["error"]) == (400, "unsupported_grant_type")


def test_failed_logins_back_off_with_429_and_a_success_resets_them(gated):
    wrong = (ALICE[0], "guess")
    for _ in range(5):
        assert get(gated, "/token", auth=wrong).status_code == 401
    throttled = get(gated, "/token", auth=ALICE)  # the right password waits too
    assert (throttled.status_code, error_code(throttled)) == (429, "TOOMANYREQUESTS")
    assert 1 <= int(throttled.headers["Retry-After"]) <= 2
    assert get(gated, manifest_path("sif/tool", "1.0"), auth=ALICE).status_code == 429
    assert get(gated, "/token", auth=BOB).status_code == 200  # another user, same address
    time.sleep(int(throttled.headers["Retry-After"]) + 0.2)
    assert get(gated, "/token", auth=wrong).status_code == 401  # one more: 2 s now
    second = get(gated, "/token", auth=ALICE)
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 2  # doubled
    time.sleep(int(second.headers["Retry-After"]) + 0.2)
    assert get(gated, "/token", auth=ALICE).status_code == 200
    assert get(gated, "/token", auth=wrong).status_code == 401  # the count started again
    assert get(gated, "/token", auth=ALICE).status_code == 200


def test_listings_show_only_what_the_caller_may_pull(gated):
    for name, reference in [
        ("sif/tool", "1.0"),
        ("tools/alpha", "1.0"),
        ("tools/beta", "2.0"),
        ("legacy/dockerimg", "v2"),
    ]:
        assert get(gated, manifest_path(name, reference), auth=ALICE).status_code == 200

    def catalog(**credentials) -> list[str]:
        response = get(gated, "/v2/_catalog", **credentials)
        assert response.status_code == 200, response.text
        return response.json()["repositories"]

    assert get(gated, "/v2/_catalog").status_code == 401
    assert catalog(token=fetch_token(gated)) == [ALPHA]
    assert catalog(auth=BOB) == [LEGACY, ALPHA]
    assert catalog(auth=ALICE) == [LEGACY, SIF, ALPHA, BETA]
    assert catalog(token=fetch_token(gated, auth=ALICE)) == [LEGACY, SIF, ALPHA, BETA]
    tags = f"/v2/{SIF}/tags/list"
    assert get(gated, tags).status_code == 401
    assert get(gated, tags, auth=BOB).status_code == 403
    assert get(gated, tags, auth=ALICE).json() == {"name": SIF, "tags": ["1.0"]}


def test_a_cached_private_blob_stays_private_when_the_upstream_is_offline(make_gated, seeded):
    online = make_gated()
    path, data = sif_blob_path(seeded)
    alice_token = fetch_token(online, f"repository:{SIF}:pull", auth=ALICE)
    assert get(online, manifest_path("sif/tool", "1.0"), token=alice_token).ok
    assert get(online, path, token=alice_token).content == data
    online.wait_stored(seeded["sif/tool:1.0"].layers[0]["digest"])
    # Another instance on the same cache, its upstream offline: it only has the cache.
    offline = make_gated(upstream={"mode": "offline"}, root=str(online.cache_root))
    assert get(offline, path).status_code == 401
    assert get(offline, path, auth=BOB).status_code == 403
    assert (
        get(offline, path, token=fetch_token(offline, f"repository:{SIF}:pull")).status_code == 401
    )
    digest = seeded["sif/tool:1.0"].layers[0]["digest"]
    elsewhere = get(offline, f"/v2/{ALPHA}/blobs/{digest}")  # a public repository's path
    assert elsewhere.status_code in (404, 503) and elsewhere.content != data
    # Every instance signs with the key under the cache root: the online one's token works.
    assert get(offline, path, token=alice_token).content == data
    assert get(offline, path, auth=ALICE).content == data


def test_a_configured_realm_is_the_one_challenges_name(make_gated):
    proxy = make_gated(auth={"realm": "https://mirror.example.org/token"})
    assert challenge(get(proxy, "/v2/"))["realm"] == "https://mirror.example.org/token"


def test_no_password_or_token_reaches_the_log(make_gated, seeded):
    proxy = make_gated(log_level="debug")
    secrets = [ALICE[1], BOB[1], "a-wrong-password-123"]
    for user, password in (ALICE, BOB, (ALICE[0], secrets[2]), ("nobody", secrets[2])):
        get(proxy, "/token", auth=(user, password), scope=f"repository:{SIF}:pull")
        get(proxy, manifest_path("sif/tool", "1.0"), auth=(user, password))
        requests.post(
            f"{proxy.url}/token",
            data={"grant_type": "password", "username": user, "password": password},
            timeout=60,
        )
        secrets.append(base64.b64encode(f"{user}:{password}".encode()).decode())
    token = fetch_token(proxy, f"repository:{SIF}:pull", auth=ALICE)
    tampered = _with_payload(token, _claims(sub="bob"))
    for bearer in (token, tampered, "not.a.token"):
        get(proxy, manifest_path("sif/tool", "1.0"), token=bearer)
    path, _ = sif_blob_path(seeded)
    get(proxy, path, token=token)
    log = proxy.wait_log("issued a token to alice")
    assert "failed login for user 'nobody'" in log  # the log does say what happened
    secrets += [token, tampered, *token.split(".")[1:], *tampered.split(".")[1:]]
    leaked = [secret for secret in secrets if secret in log]
    assert not leaked, "credentials in the proxy's log"

"""The access log of a real `mirror serve`: one line per request with who, what, the
status, the bytes, where the content came from (hit, fill leader or follower, revalidated,
stale) and the upstream; never a password, token or signed query, checked with real logins;
reopened on SIGHUP after logrotate moved it, losing no line."""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from aiohttp.test_utils import make_mocked_request

from mirror.config import LogConfig
from mirror.proxy.access_log import AccessLog, loggable_path
from mirror.proxy.served import served
from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support import oci
from tests.support.accounts import write_htpasswd
from tests.support.clients import skopeo_copy, skopeo_login
from tests.support.faulty import FaultyUpstream
from tests.support.processes import StartError
from tests.support.seed import RegistryClient, publish_image

ACCEPT = {"Accept": oci.ACCEPT_ALL_MANIFESTS}
ALICE = ("alice", "alice-pass-phrase-9f3e")


def _json_lines(path: Path, count: int = 0) -> list[dict]:
    return [json.loads(line) for line in _wait_lines(path, count)]


def _wait_lines(
    path: Path, count: int = 0, until: Callable[[list[str]], bool] = lambda lines: True
) -> list[str]:
    """The file's lines once it has `count` and `until` holds (a line is written once the
    response is sent: the client may have it first)."""
    deadline = time.monotonic() + 30
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count and until(lines):
            return lines
        assert time.monotonic() < deadline, f"{len(lines)} of {count} lines:\n" + "\n".join(lines)
        time.sleep(0.05)


# -- what a line holds ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "logged"),
    [
        (
            "/v2/a/b/tags/list?n=10&last=x&ns=docker.io",
            "/v2/a/b/tags/list?n=10&last=x&ns=docker.io",
        ),
        ("/v2/a/blobs/sha256:ab?X-Amz-Signature=s3cr3t&ns=q.io", "/v2/a/blobs/sha256:ab?ns=q.io"),
        ("/token?account=alice&scope=repository:a:pull&access_token=t0k", "/token"),
        ('/v2/a"b%20c/manifests/1', "/v2/a%22b%20c/manifests/1"),
    ],
)
def test_the_path_keeps_only_query_keys_that_cannot_be_secrets(target, logged):
    assert loggable_path(make_mocked_request("GET", target)) == logged


def test_text_and_json_lines_hold_the_same_fields(tmp_path):
    request = make_mocked_request("GET", "/v2/x/manifests/1?ns=up.test")
    record = served(request)
    record.user, record.upstream = "bad user", "hub"
    for kind in ("text", "json"):
        path = tmp_path / f"access.{kind}"
        access_log = AccessLog(LogConfig(str(path), kind))
        access_log.write(request, 404, 17, 0.0123)
        access_log.close()
        line = path.read_text()
        assert line.endswith("\n") and line.count("\n") == 1
        if kind == "json":
            fields = json.loads(line)
            assert fields == {
                "time": fields["time"],
                "client": None,  # a mocked request has no peer
                "user": "bad user",
                "method": "GET",
                "path": "/v2/x/manifests/1?ns=up.test",
                "status": 404,
                "bytes": 17,
                "duration": 0.012,
                "cache": None,
                "upstream": "hub",
                "pid": os.getpid(),  # JSON only: which worker served
            }
            assert fields["time"].endswith("Z") and "T" in fields["time"]
        else:
            assert line.split(" ", 1)[1] == (
                '- bad%20user "GET /v2/x/manifests/1?ns=up.test" 404 17 0.012 - hub\n'
            )


# -- a real mirror ----------------------------------------------------------------------------
def test_each_request_is_one_line_with_its_cache_result_and_upstream(make_proxy, upstream, seeded):
    proxy = make_proxy({"hub": upstream_entry(upstream.url)}, log={"access": "access.log"})
    access = proxy.workdir / "access.log"  # relative to the config file
    image = seeded["tools/alpha:1.0"]
    layer = image.layers[0]
    manifest = f"/v2/{UPSTREAM_PREFIX}/tools/alpha/manifests/1.0"
    blob = f"/v2/{UPSTREAM_PREFIX}/tools/alpha/blobs/{layer['digest']}"
    for path in (manifest, manifest):
        assert requests.get(proxy.url + path, headers=ACCEPT, timeout=30).ok
    assert requests.head(proxy.url + blob, timeout=30).ok  # the upstream's size, not cached
    assert requests.get(proxy.url + blob, timeout=30).ok
    # the client has its last byte once the digest verified; the rename follows
    proxy.wait_stored(layer["digest"])
    assert requests.get(proxy.url + blob, timeout=30).ok
    assert requests.head(proxy.url + blob, timeout=30).ok
    assert requests.get(proxy.url + "/healthz", timeout=30).text == "ok\n"
    assert requests.get(proxy.url + "/readyz", timeout=30).text == "ready\n"
    tags = f"/v2/{UPSTREAM_PREFIX}/tools/alpha/tags/list?n=1&sig=SECRETSIG"
    assert requests.get(proxy.url + tags, timeout=30).ok
    assert requests.get(proxy.url + manifest.replace("1.0", "nope"), timeout=30).status_code == 404
    lines = _wait_lines(access, 9)
    fields = [line.split(" ") for line in lines]
    # time client user "METHOD path" status bytes seconds cache upstream
    summary = [(f[3], f[4], f[5], f[6], f[8], f[9]) for f in fields]
    assert summary == [
        ('"GET', '/v2/"', "200", "2", "-", "-"),  # the probe that found it started
        ('"GET', f'{manifest}"', "200", str(len(image.manifest)), "miss-leader", "hub"),
        ('"GET', f'{manifest}"', "200", str(len(image.manifest)), "hit", "hub"),
        ('"HEAD', f'{blob}"', "200", "0", "miss-leader", "hub"),
        ('"GET', f'{blob}"', "200", str(layer["size"]), "miss-leader", "hub"),
        ('"GET', f'{blob}"', "200", str(layer["size"]), "hit", "hub"),
        ('"HEAD', f'{blob}"', "200", "0", "hit", "hub"),
        ('"GET', f'{tags.split("&")[0]}"', "200", summary[7][3], "-", "hub"),
        ('"GET', f'{manifest.replace("1.0", "nope")}"', "404", summary[8][3], "-", "hub"),
    ]
    assert all(f[1] == "127.0.0.1" and f[2] == "-" for f in fields)
    assert all(f[0].endswith("Z") and float(f[7]) >= 0 for f in fields)
    assert "SECRETSIG" not in access.read_text()
    assert "/blobs/" not in proxy.log()  # not also on standard output


def test_a_fill_has_one_leader_and_its_followers(make_proxy):
    with FaultyUpstream("slow", slow_chunk=256 * 1024, slow_interval=0.25) as server:  # ~2 s
        proxy = make_proxy(
            {"f": {"url": server.url, "prefix": "f.test", "default": True}},
            log={"access": "access.log", "format": "json"},
        )
        url = proxy.url + server.layer_path
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(requests.get, url, timeout=60)
            time.sleep(0.5)  # the fill runs
            others = [pool.submit(requests.get, url, timeout=60) for _ in range(2)]
            head = requests.head(url, timeout=60)  # its size from the running fill
            assert [r.result().status_code for r in (first, *others)] == [200] * 3
        assert head.status_code == 200 and first.result().ok
    lines = [f for f in _json_lines(proxy.workdir / "access.log", 5) if "/blobs/" in f["path"]]
    gets = [f for f in lines if f["method"] == "GET"]
    # one GET started the download, the two others joined it (which first, the log's order
    # of responses does not say)
    assert sorted(f["cache"] for f in gets) == ["miss-follower", "miss-follower", "miss-leader"]
    assert {f["bytes"] for f in gets} == {server.layer_size}
    assert [(f["method"], f["cache"]) for f in lines if f not in gets] == [
        ("HEAD", "miss-follower")
    ]


def test_revalidated_and_stale_tags_say_so(make_proxy, private_upstream):
    client = RegistryClient(private_upstream.url)
    publish_image(
        client,
        "stale/img",
        ["1.0"],
        oci.ImageConfigSpec(title="stale", version="1.0"),
        [oci.make_layer("stale", {"f": 100}, "F")],
    )
    client.close()
    proxy = make_proxy(
        {"u": upstream_entry(private_upstream.url)},
        tag_ttl_seconds=0,
        log={"access": "access.log", "format": "json"},
    )
    url = f"{proxy.url}/v2/stale/img/manifests/1.0"
    assert requests.get(url, headers=ACCEPT, timeout=30).ok
    assert requests.get(url, headers=ACCEPT, timeout=30).ok
    private_upstream.stop()
    assert requests.get(url, headers=ACCEPT, timeout=30).ok
    lines = _json_lines(proxy.workdir / "access.log", 4)
    assert [f["cache"] for f in lines if "/manifests/" in f["path"]] == [
        "miss-leader",
        "revalidated",
        "stale",
    ]


def test_no_credential_reaches_the_log_and_users_are_named(make_proxy, upstream, seeded, tmp_path):
    auth = {"htpasswd": str(write_htpasswd(tmp_path / "htpasswd", dict([ALICE])))}
    path = tmp_path / "logs" / "access.json"
    path.parent.mkdir()
    proxy = make_proxy(
        {"test": upstream_entry(upstream.url, access="authenticated")},
        auth=auth,
        log={"access": str(path), "format": "json"},
    )
    # a real client: skopeo logs in (GET /token with Basic) and copies with bearer tokens
    authfile = tmp_path / "auth.json"
    login = skopeo_login(proxy.host, *ALICE, authfile)
    assert login.returncode == 0, login.stderr
    skopeo_copy(
        proxy.host, "tools/alpha:1.0", f"dir:{tmp_path / 'img'}", "--src-authfile", str(authfile)
    )
    # plain HTTP clients: Basic on a pull, a token in a query string, a wrong password
    manifest = f"{proxy.url}/v2/tools/alpha/manifests/1.0"
    assert requests.get(manifest, auth=ALICE, headers=ACCEPT, timeout=30).ok
    token = requests.get(f"{proxy.url}/token", auth=ALICE, timeout=30).json()["token"]
    assert requests.get(f"{manifest}?access_token={token}", timeout=30).status_code == 401
    wrong = requests.get(manifest.replace("1.0", "2.0"), auth=(ALICE[0], "wrong"), timeout=30)
    assert wrong.status_code == 401
    text = "\n".join(_wait_lines(path, until=lambda lines: "manifests/2.0" in lines[-1]))
    basic = base64.b64encode(f"{ALICE[0]}:{ALICE[1]}".encode()).decode()
    for secret in (ALICE[1], basic, token, token.split(".")[2], "Bearer", "Basic", "uthorization"):
        assert secret not in text
        assert secret not in proxy.log()
    lines = _json_lines(path)
    pulls = [f for f in lines if "/tools/alpha/" in f["path"] and f["status"] == 200]
    assert len(pulls) >= 3 and {f["user"] for f in pulls} == {"alice"}  # skopeo's and ours
    assert {f["user"] for f in lines if f["path"] == "/token"} == {"alice"}
    refused = [f for f in lines if f["status"] == 401 and "/tools/alpha/" in f["path"]]
    assert len(refused) == 2 and {f["user"] for f in refused} == {None}


def test_an_access_log_that_cannot_be_opened_is_one_error_line(make_proxy, upstream, tmp_path):
    with pytest.raises(StartError, match="exited with 2") as failed:
        make_proxy(
            {"test": upstream_entry(upstream.url)}, log={"access": str(tmp_path / "no" / "a.log")}
        )
    assert f"log.access: cannot open {tmp_path / 'no' / 'a.log'}: No such file" in str(failed.value)
    assert "Traceback" not in str(failed.value)


def test_after_logrotate_moves_the_file_sighup_reopens_it_and_no_line_is_lost(
    make_proxy, upstream, seeded
):
    proxy = make_proxy({"hub": upstream_entry(upstream.url)}, log={"access": "access.log"})
    access, rotated = proxy.workdir / "access.log", proxy.workdir / "access.log.1"
    count, done = 300, []
    stop = threading.Event()

    def pull() -> None:  # one client after another, each request numbered by its `n`
        with requests.Session() as session:
            for n in range(count):
                url = f"{proxy.url}/v2/{UPSTREAM_PREFIX}/tools/alpha/tags/list?n={n}"
                assert session.get(url, timeout=30).ok
                done.append(n)
                if stop.is_set():
                    break

    with ThreadPoolExecutor(2) as pool:
        clients = [pool.submit(pull) for _ in range(2)]
        while len(done) < count // 2:
            time.sleep(0.01)
        os.rename(access, rotated)  # logrotate's move, then its postrotate HUP
        assert proxy.pid is not None
        os.kill(proxy.pid, signal.SIGHUP)
        proxy.wait_log(f"SIGHUP: reopened access log {access}")
        for client in clients:
            client.result()
    requests_made = 1 + len(done)  # the start-up probe of /v2/ too
    old = rotated.read_text().splitlines()
    new = _wait_lines(access, requests_made - len(old))
    assert len(old) + len(new) == requests_made
    assert len(new) > 0 and len(old) > count // 2
    numbers = sorted(int(line.split("?n=")[1].split('"')[0]) for line in old + new if "?n=" in line)
    assert numbers == sorted(done)

"""Blob uploads to the local namespace over HTTP, against a real `mirror serve` with logins:
every upload form of the OCI distribution spec, sessions that resume and move between
instances, the quota and cross-repository mounts."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time

import pytest
import requests

from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support.accounts import write_groups, write_htpasswd

ALICE = ("alice", "alice's long password")  # in group "lab"
BOB = ("bob", "bob's long password")  # in group "lab"
CAROL = ("carol", "carol's long password")  # a [local] admin
RULES = [{"repositories": ["tools/beta"], "access": "restricted", "users": ["carol"]}]
TOOL = "local/alice/tool"
UPLOADS = f"/v2/{TOOL}/blobs/uploads/"
MIB = 1024 * 1024


@pytest.fixture
def auth(tmp_path) -> dict:
    return {
        "htpasswd": str(write_htpasswd(tmp_path / "htpasswd", dict([ALICE, BOB, CAROL]))),
        "groups_file": str(write_groups(tmp_path / "groups", {"lab": ["alice", "bob"]})),
    }


@pytest.fixture
def make_pushable(make_proxy, upstream, seeded, auth):
    def make(**local):
        return make_proxy(
            {"test": upstream_entry(upstream.url, rules=RULES)},
            auth=auth,
            local={
                "prefix": "local",
                "admins": ["carol"],
                "access": "restricted",
                "users": ["carol"],
                **local,
            },
        )

    return make


@pytest.fixture
def pushable(make_pushable):
    return make_pushable()


def call(proxy, method: str, path: str, *, auth=ALICE, **options) -> requests.Response:
    url = path if path.startswith("http") else f"{proxy.url}{path}"
    return requests.request(method, url, auth=auth, timeout=60, **options)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push(proxy, data: bytes, name: str = TOOL, auth=ALICE, digest: str | None = None):
    """A monolithic upload: one POST with the blob and its digest."""
    params = {"digest": digest or sha256(data)}
    return call(proxy, "POST", f"/v2/{name}/blobs/uploads/", params=params, data=data, auth=auth)


def start(proxy, name: str = TOOL, auth=ALICE) -> str:
    """POST a new session; its Location (relative, as distribution answers)."""
    response = call(proxy, "POST", f"/v2/{name}/blobs/uploads/", auth=auth)
    assert response.status_code == 202, response.text
    location = response.headers["Location"]
    upload_id = response.headers["Docker-Upload-UUID"]
    assert location == f"/v2/{name}/blobs/uploads/{upload_id}"
    assert re.fullmatch(r"[0-9a-f]{32}", upload_id)
    assert response.headers["Range"] == "0-0"
    return location


def patch(proxy, location: str, data: bytes, start_at: int | None, auth=ALICE):
    headers = {"Content-Type": "application/octet-stream"}
    if start_at is not None:
        headers["Content-Range"] = f"{start_at}-{start_at + len(data) - 1}"
    return call(proxy, "PATCH", location, data=data, headers=headers, auth=auth)


def finish(proxy, location: str, digest: str, data: bytes = b"", auth=ALICE):
    return call(proxy, "PUT", location, params={"digest": digest}, data=data, auth=auth)


def assert_created(response: requests.Response, digest: str, name: str = TOOL) -> None:
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == f"/v2/{name}/blobs/{digest}"
    assert response.headers["Docker-Content-Digest"] == digest


def assert_stored(proxy, data: bytes, name: str = TOOL) -> None:
    """The blob is in blobs/, linked to `name`, and no upload session is left."""
    hex_digest = hashlib.sha256(data).hexdigest()
    assert proxy.blob_path(hex_digest).read_bytes() == data
    assert linked(proxy, name, hex_digest)
    assert sessions(proxy) == []


def linked(proxy, name: str, hex_digest: str) -> bool:
    prefix, _, rest = name.partition("/")
    return (proxy.cache_root / "repositories" / prefix / rest / "_blobs" / hex_digest).exists()


def sessions(proxy) -> list[str]:
    uploads = proxy.cache_root / "uploads"
    return sorted(os.listdir(uploads)) if uploads.exists() else []


def error_code(response: requests.Response) -> str:
    return response.json()["errors"][0]["code"]


def no_partial_files(proxy) -> None:
    """Nothing of a refused upload anywhere: no blob, no session, no temp file."""
    assert proxy.stored_blobs() == {}
    assert sessions(proxy) == []
    assert proxy.temp_files() == []


# -- the upload forms --------------------------------------------------------------------------
def test_monolithic_post_with_digest(pushable):
    data = os.urandom(300_000)
    assert_created(push(pushable, data), sha256(data))
    assert_stored(pushable, data)


def test_post_then_put_with_the_whole_body(pushable):
    data = b"config blob"
    assert_created(finish(pushable, start(pushable), sha256(data), data), sha256(data))
    assert_stored(pushable, data)


def test_chunked_patches_with_content_range_then_an_empty_put(pushable):
    data = os.urandom(3 * MIB + 12345)
    location = start(pushable)
    pieces = [data[: 2 * MIB], data[2 * MIB : 3 * MIB], data[3 * MIB :]]
    offset = 0
    for piece in pieces:
        response = patch(pushable, location, piece, offset)
        offset += len(piece)
        assert response.status_code == 202, response.text
        assert response.headers["Location"] == location
        assert response.headers["Range"] == f"0-{offset - 1}"
        assert response.headers["Docker-Upload-UUID"] == location.rsplit("/", 1)[1]
    assert_created(finish(pushable, location, sha256(data)), sha256(data))
    assert_stored(pushable, data)


def test_patches_without_content_range_append_and_a_put_brings_the_last_chunk(pushable):
    """As docker and containerd send: chunks without Content-Range go at the end."""
    data = os.urandom(2 * MIB + 7)
    location = start(pushable)
    assert patch(pushable, location, data[:MIB], None).headers["Range"] == f"0-{MIB - 1}"
    assert patch(pushable, location, data[MIB : 2 * MIB], None).status_code == 202
    response = finish(pushable, location, sha256(data), data[2 * MIB :])
    assert_created(response, sha256(data))
    assert_stored(pushable, data)


def test_a_chunk_at_the_wrong_offset_is_416_with_the_current_range(pushable):
    data = os.urandom(1000)
    location = start(pushable)
    assert patch(pushable, location, data[:400], 0).status_code == 202
    for wrong in (0, 300, 401):
        response = patch(pushable, location, data[400:], wrong)
        assert response.status_code == 416
        assert error_code(response) == "RANGE_INVALID"
        assert response.headers["Range"] == "0-399"
        assert response.headers["Location"] == location
    assert patch(pushable, location, data[400:], 400).headers["Range"] == "0-999"
    assert_created(finish(pushable, location, sha256(data)), sha256(data))


def test_a_content_range_that_disagrees_with_the_body_is_refused(pushable):
    location = start(pushable)
    response = call(pushable, "PATCH", location, data=b"12345", headers={"Content-Range": "0-9"})
    assert response.status_code == 416
    status = call(pushable, "GET", location)
    assert status.headers["Range"] == "0-0"


def test_upload_status_answers_with_the_range_held(pushable):
    location = start(pushable)
    patch(pushable, location, b"x" * 1234, 0)
    for method in ("GET", "HEAD"):
        response = call(pushable, method, location)
        assert response.status_code == 204
        assert response.headers["Range"] == "0-1233"
        assert response.headers["Location"] == location
        assert response.headers["Docker-Upload-UUID"] == location.rsplit("/", 1)[1]


def test_cancel_removes_the_session(pushable):
    location = start(pushable)
    patch(pushable, location, b"abc", 0)
    assert call(pushable, "DELETE", location).status_code == 204
    assert sessions(pushable) == []
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        response = call(pushable, method, location, params={"digest": sha256(b"abc")})
        assert response.status_code == 404
        assert error_code(response) == "BLOB_UPLOAD_UNKNOWN"


@pytest.mark.parametrize("upload_id", ["0" * 32, "not-an-id", "..%2F..%2Fblobs", "A" * 32])
def test_unknown_or_malformed_upload_ids_are_404(pushable, upload_id):
    response = call(pushable, "GET", f"{UPLOADS}{upload_id}")
    assert response.status_code == 404
    assert error_code(response) == "BLOB_UPLOAD_UNKNOWN"


def test_a_session_is_bound_to_its_repository(pushable):
    location = start(pushable)
    upload_id = location.rsplit("/", 1)[1]
    response = call(pushable, "GET", f"/v2/local/alice/other/blobs/uploads/{upload_id}")
    assert response.status_code == 404
    assert error_code(response) == "BLOB_UPLOAD_UNKNOWN"


def test_only_who_started_an_upload_or_an_admin_continues_it(pushable):
    location = start(pushable, "local/lab/app")
    response = patch(pushable, location, b"abc", 0, auth=BOB)  # bob may push to lab/
    assert response.status_code == 403
    assert error_code(response) == "DENIED"
    assert patch(pushable, location, b"abc", 0, auth=CAROL).status_code == 202
    assert_created(finish(pushable, location, sha256(b"abc")), sha256(b"abc"), "local/lab/app")


def test_the_digest_is_verified_and_a_mismatch_leaves_nothing(pushable):
    location = start(pushable)
    patch(pushable, location, b"the real bytes", 0)
    response = finish(pushable, location, sha256(b"other bytes"))
    assert response.status_code == 400
    assert error_code(response) == "DIGEST_INVALID"
    no_partial_files(pushable)
    assert call(pushable, "GET", location).status_code == 404
    monolithic = push(pushable, b"b", digest=sha256(b"a"))
    assert monolithic.status_code == 400
    no_partial_files(pushable)


def test_a_blob_stored_already_is_linked_again(pushable):
    data = b"shared layer"
    for name in (TOOL, "local/alice/other"):
        assert_created(push(pushable, data, name), sha256(data), name)
        assert_stored(pushable, data, name)


# -- who may push ------------------------------------------------------------------------------
def test_pushing_to_another_namespace_is_denied(pushable):
    for name in ("local/bob/tool", "local/staff/tool"):
        response = call(pushable, "POST", f"/v2/{name}/blobs/uploads/")
        assert response.status_code == 403
        assert error_code(response) == "DENIED"
        assert response.headers["Content-Type"].startswith("application/json")
    assert sessions(pushable) == []


def test_an_anonymous_push_is_challenged_for_pull_and_push(pushable):
    response = call(pushable, "POST", UPLOADS, auth=None)
    assert response.status_code == 401
    assert error_code(response) == "UNAUTHORIZED"
    challenge = response.headers["WWW-Authenticate"]
    assert f'scope="repository:{TOOL}:pull,push"' in challenge
    assert sessions(pushable) == []


def test_a_push_with_a_token_from_the_token_endpoint(pushable):
    def token(scope: str) -> str:
        response = call(pushable, "GET", "/token", params={"service": "hpc-mirror", "scope": scope})
        assert response.status_code == 200
        return response.json()["token"]

    data = b"pushed with a token"
    pushing = {"Authorization": f"Bearer {token(f'repository:{TOOL}:pull,push')}"}
    response = requests.post(
        f"{pushable.url}{UPLOADS}",
        params={"digest": sha256(data)},
        data=data,
        headers=pushing,
        timeout=60,
    )
    assert_created(response, sha256(data))
    pulling = {"Authorization": f"Bearer {token(f'repository:{TOOL}:pull')}"}
    refused = requests.post(f"{pushable.url}{UPLOADS}", headers=pulling, timeout=60)
    assert refused.status_code == 401
    assert "pull,push" in refused.headers["WWW-Authenticate"]


def test_cached_upstream_repositories_stay_read_only(pushable, proxy):
    response = call(pushable, "POST", f"/v2/{UPSTREAM_PREFIX}/tools/alpha/blobs/uploads/")
    assert response.status_code == 405
    assert error_code(response) == "UNSUPPORTED"
    assert "local/<user or group>" in response.json()["errors"][0]["message"]
    off = requests.post(f"{proxy.url}/v2/tools/alpha/blobs/uploads/", timeout=60)
    assert off.status_code == 405
    assert "[local] prefix" in off.json()["errors"][0]["message"]


# -- quota -------------------------------------------------------------------------------------
def test_a_monolithic_push_past_the_quota_is_refused_and_leaves_nothing(make_pushable):
    proxy = make_pushable(quota="2M")
    data = os.urandom(3 * MIB)
    response = push(proxy, data)
    assert response.status_code == 403
    assert error_code(response) == "DENIED"
    message = response.json()["errors"][0]["message"]
    assert "local/alice" in message
    assert "0 B" in message and "2.0 MiB" in message
    no_partial_files(proxy)


def test_the_quota_counts_what_the_namespace_holds(make_pushable):
    proxy = make_pushable(quota="3M")
    first = os.urandom(2 * MIB)
    assert_created(push(proxy, first), sha256(first))
    # The same blob again in another repository of the namespace adds nothing.
    assert_created(push(proxy, first, "local/alice/other"), sha256(first), "local/alice/other")
    location = start(proxy)
    assert patch(proxy, location, os.urandom(MIB // 2), 0).status_code == 202
    response = patch(proxy, location, os.urandom(MIB), MIB // 2)
    assert response.status_code == 403
    message = response.json()["errors"][0]["message"]
    assert "local/alice" in message and "2.0 MiB" in message and "3.0 MiB" in message
    assert sessions(proxy) == []
    assert list(proxy.stored_blobs()) == [sha256(first).split(":")[1]]
    # Other namespaces have their own.
    other = os.urandom(2 * MIB)
    assert_created(push(proxy, other, "local/bob/tool", BOB), sha256(other), "local/bob/tool")


# -- mounts ------------------------------------------------------------------------------------
def mount(proxy, digest: str, source: str, name: str = TOOL, auth=ALICE) -> requests.Response:
    params = {"mount": digest, "from": source}
    return call(proxy, "POST", f"/v2/{name}/blobs/uploads/", params=params, auth=auth)


def test_a_mount_from_a_readable_repository_links_the_blob(pushable, seeded):
    layer = seeded["tools/alpha:1.0"].layers[-1]["digest"]
    source = f"{UPSTREAM_PREFIX}/tools/alpha"
    assert call(pushable, "GET", f"/v2/{source}/blobs/{layer}").status_code == 200
    pushable.wait_stored(layer.split(":")[1])
    response = mount(pushable, layer, source)
    assert_created(response, layer)
    assert linked(pushable, TOOL, layer.split(":")[1])
    own = b"alice's own layer"
    assert_created(push(pushable, own), sha256(own))
    assert_created(
        mount(pushable, sha256(own), TOOL, "local/alice/copy"), sha256(own), "local/alice/copy"
    )


def test_a_mount_the_caller_may_not_read_falls_back_to_an_upload(pushable, seeded):
    layer = seeded["tools/beta:2.0"].layers[-1]["digest"]
    restricted = f"{UPSTREAM_PREFIX}/tools/beta"
    assert call(pushable, "GET", f"/v2/{restricted}/blobs/{layer}", auth=CAROL).status_code == 200
    pushable.wait_stored(layer.split(":")[1])
    assert call(pushable, "GET", f"/v2/{restricted}/blobs/{layer}").status_code == 403
    bobs = b"bob's private layer"
    assert_created(push(pushable, bobs, "local/bob/secret", BOB), sha256(bobs), "local/bob/secret")
    for digest, source in [
        (layer, restricted),
        (sha256(bobs), "local/bob/secret"),
        (sha256(b"nowhere"), f"{UPSTREAM_PREFIX}/tools/alpha"),  # readable, lacks it
        (layer, "not a repository!"),
    ]:
        response = mount(pushable, digest, source)
        assert response.status_code == 202, source
        assert response.headers["Location"].startswith(UPLOADS)
        assert not linked(pushable, TOOL, digest.split(":")[1])
    # bob himself mounts it; so does an admin.
    assert_created(
        mount(pushable, sha256(bobs), "local/bob/secret", "local/bob/app", BOB),
        sha256(bobs),
        "local/bob/app",
    )


def test_a_mount_past_the_quota_falls_back_to_an_upload(make_pushable, seeded):
    proxy = make_pushable(quota="1")
    layer = seeded["tools/alpha:1.0"].layers[-1]["digest"]
    source = f"{UPSTREAM_PREFIX}/tools/alpha"
    assert call(proxy, "GET", f"/v2/{source}/blobs/{layer}").status_code == 200
    proxy.wait_stored(layer.split(":")[1])
    assert mount(proxy, layer, source).status_code == 202
    assert not linked(proxy, TOOL, layer.split(":")[1])


# -- uploads that break off, and that move between instances -----------------------------------
def send_part_and_hang_up(proxy, location: str, declared: int, part: bytes) -> None:
    """A PATCH that declares `declared` bytes, sends `part` of them and closes the socket."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as connection:
        credentials = requests.auth._basic_auth_str(*ALICE)
        head = (
            f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\n"
            f"Authorization: {credentials}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {declared}\r\n\r\n"
        )
        connection.sendall(head.encode() + part)
        time.sleep(0.5)  # let the mirror take what was sent before the socket closes


def wait_range(proxy, location: str) -> int:
    """The size the session holds, once a broken-off PATCH has left it: bytes the mirror
    read before the break may still be landing, so the size must hold still a moment."""
    deadline = time.monotonic() + 30
    seen: list[str] = []
    while time.monotonic() < deadline:
        seen.append(call(proxy, "GET", location).headers["Range"])
        if seen[-1] != "0-0" and seen[-3:] == [seen[-1]] * 3:
            return int(seen[-1].split("-")[1]) + 1
        time.sleep(0.2)
    raise AssertionError(f"the session's bytes never held still: {seen[-5:]}")


def test_a_patch_that_breaks_off_keeps_its_bytes_and_the_upload_resumes(pushable):
    data = os.urandom(6 * MIB)
    location = start(pushable)
    send_part_and_hang_up(pushable, location, len(data), data[: 3 * MIB])
    held = wait_range(pushable, location)
    assert 0 < held <= 3 * MIB
    assert pushable.stored_blobs() == {}
    upload_id = location.rsplit("/", 1)[1]
    assert (pushable.cache_root / "uploads" / upload_id / "data").read_bytes() == data[:held]
    while True:  # resume as a client does: from the Range the mirror reports
        response = patch(pushable, location, data[held:], held)
        if response.status_code != 416:
            break
        held = int(response.headers["Range"].split("-")[1]) + 1
    assert response.status_code == 202
    assert_created(finish(pushable, location, sha256(data)), sha256(data))
    assert_stored(pushable, data)


def test_a_chunked_upload_started_on_one_instance_finishes_on_another(
    make_proxy, upstream, seeded, auth, tmp_path
):
    shared = tmp_path / "shared-cache"
    first, second = (
        make_proxy(
            {"test": upstream_entry(upstream.url)},
            auth=auth,
            local={"prefix": "local"},
            name=name,
            root=str(shared),
        )
        for name in ("first", "second")
    )
    data = os.urandom(3 * MIB + 5)
    location = start(first)
    assert patch(first, location, data[:MIB], 0).status_code == 202
    assert call(second, "GET", location).headers["Range"] == f"0-{MIB - 1}"
    assert patch(second, location, data[MIB : 2 * MIB], MIB).status_code == 202
    stale = patch(first, location, data[MIB : 2 * MIB], MIB)  # first's view is out of date
    assert stale.status_code == 416 and stale.headers["Range"] == f"0-{2 * MIB - 1}"
    assert patch(first, location, data[2 * MIB : 3 * MIB], 2 * MIB).status_code == 202
    response = finish(second, location, sha256(data), data[3 * MIB :])
    assert_created(response, sha256(data))
    assert_stored(second, data)
    assert call(first, "GET", location).status_code == 404


# -- what the mirror records ---------------------------------------------------------------------
def test_pushes_are_counted_and_logged_with_the_bytes_received(
    make_proxy, upstream, seeded, auth, tmp_path
):
    log_path = tmp_path / "access.log"
    proxy = make_proxy(
        {"test": upstream_entry(upstream.url)},
        auth=auth,
        local={"prefix": "local"},
        log={"access": str(log_path)},
    )
    data = os.urandom(100_000)
    location = start(proxy)
    patch(proxy, location, data, 0)
    finish(proxy, location, sha256(data))
    finish(proxy, start(proxy), sha256(b"wrong"), b"right")
    metrics = requests.get(f"{proxy.url}/metrics", timeout=60).text
    assert 'hpc_mirror_pushes_total{kind="blob",outcome="stored"} 1.0' in metrics
    assert 'hpc_mirror_pushes_total{kind="blob",outcome="refused"} 1.0' in metrics
    assert "hpc_mirror_pushed_bytes_total 100005.0" in metrics
    assert re.search(
        r'hpc_mirror_requests_total\{method="PATCH",route="upload",status="202"\} 1\.0', metrics
    )
    lines = log_path.read_text().splitlines()
    patch_line = next(line for line in lines if '"PATCH ' in line)
    assert " alice " in patch_line and " 202 100000 " in patch_line


# -- a real client -------------------------------------------------------------------------------
@pytest.mark.parametrize("chunked", [False, True])
def test_the_oras_sdk_uploads_blobs_both_ways(pushable, tmp_path, chunked):
    """oras-py logs in through the token flow, then POST + PUT, or POST + PATCHes with
    Content-Range + PUT (its `upload_blob` without the HEAD it asks first)."""
    import oras.client
    import oras.oci

    host = f"127.0.0.1:{pushable.port}"
    client = oras.client.OrasClient(hostname=host, insecure=True)
    client.login(
        username=ALICE[0],
        password=ALICE[1],
        hostname=host,
        config_path=str(tmp_path / "config.json"),
    )
    data = os.urandom(3 * MIB + 99)
    blob_file = tmp_path / "blob"
    blob_file.write_bytes(data)
    layer = oras.oci.NewLayer(str(blob_file))
    container = client.get_container(f"{host}/{TOOL}:1")
    if chunked:
        response = client.chunked_upload(str(blob_file), container, layer, chunk_size=MIB)
    else:
        response = client.put_upload(str(blob_file), container, layer)
    assert_created(response, sha256(data))
    assert_stored(pushable, data)

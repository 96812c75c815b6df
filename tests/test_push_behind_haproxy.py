"""Pushes through HAProxy in front of two instances on one cache root, balanced round-robin
with no stickiness: a chunked upload whose PATCHes land on both instances finishes and is
pulled back byte-exact (upload sessions live in the store, not in a process), and skopeo
pushes an image through it (README, "Several login nodes")."""

from __future__ import annotations

import json
from urllib.parse import urljoin

import pytest

from tests.conftest import upstream_entry
from tests.support import oci
from tests.support.accounts import auth_table
from tests.support.clients import skopeo
from tests.support.haproxy import HAProxyProcess
from tests.support.proxy import ProxyProcess, proxy_config
from tests.support.seed import RegistryClient

ALICE = ("alice", "alice's pass phrase")
CHUNK = 256 << 10


@pytest.fixture
def balanced(tmp_path, upstream, seeded):
    """HAProxy, round-robin, over two instances with logins and `[local]` on one cache."""
    auth = auth_table(tmp_path, dict([ALICE]), {"hpc": ["alice"]})
    instances = []
    for n in (1, 2):
        config = proxy_config(tmp_path / f"node{n}", {"test": upstream_entry(upstream.url)})
        config["cache"]["root"] = str(tmp_path / "shared-cache")
        config["auth"] = auth
        config["local"] = {"prefix": "local", "access": "authenticated"}
        instances.append(ProxyProcess(tmp_path / f"node{n}", config))
    try:
        for instance in instances:
            instance.start()
        hosts = [instance.host for instance in instances]
        haproxy = HAProxyProcess(tmp_path / "haproxy", hosts, balance="roundrobin")
        haproxy.ready_statuses = (200, 401)  # the instances challenge anonymous /v2/
        with haproxy:
            yield haproxy, instances
    finally:
        for instance in instances:
            instance.stop()


def one_connection_per_request(url: str) -> RegistryClient:
    """A client as alice whose every request is a new connection, so HAProxy balances each."""
    client = RegistryClient(url, username=ALICE[0], password=ALICE[1])
    client.session.headers["Connection"] = "close"
    return client


def test_a_chunked_upload_split_over_both_instances_completes(balanced):
    haproxy, instances = balanced
    blob = oci.deterministic_bytes("chunked over two nodes", 4 * CHUNK + 12345)
    digest = oci.sha256_digest(blob)
    repository = "local/alice/chunky"
    scope = RegistryClient.push_scope(repository)
    client = one_connection_per_request(haproxy.url)
    try:
        started = client.request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope)
        assert started.status_code == 202, started.text
        location = urljoin(haproxy.url, started.headers["Location"])
        for offset in range(0, len(blob), CHUNK):
            piece = blob[offset : offset + CHUNK]
            patched = client.request(
                "PATCH", location, scope=scope, body=piece,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + len(piece) - 1}",
                },
            )  # fmt: skip
            assert patched.status_code == 202, patched.text
            assert patched.headers["Range"] == f"0-{offset + len(piece) - 1}"
            location = urljoin(haproxy.url, patched.headers["Location"])
        status = client.request("GET", location, scope=scope)
        assert status.status_code == 204, status.text
        assert status.headers["Range"] == f"0-{len(blob) - 1}"
        separator = "&" if "?" in location else "?"
        finished = client.request("PUT", f"{location}{separator}digest={digest}", scope=scope)
        assert finished.status_code == 201, finished.text
        for _ in instances:  # a GET from each instance, round-robin
            pulled = client.get_blob(repository, digest)
            assert pulled.status_code == 200
            assert pulled.content == blob
    finally:
        client.close()
    for instance in instances:
        assert f'"PATCH /v2/{repository}/blobs/uploads/' in instance.log()


def test_skopeo_pushes_through_haproxy(balanced, upstream, seeded, tmp_path):
    haproxy, instances = balanced
    alice = f"{ALICE[0]}:{ALICE[1]}"
    pushed = skopeo(
        "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--dest-creds", alice,
        "--preserve-digests", f"docker://{upstream.host}/tools/alpha:1.0",
        f"docker://{haproxy.host}/local/hpc/alpha:1",
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    pulled = skopeo(
        "copy", "--src-tls-verify=false", "--src-creds", alice,
        f"docker://{haproxy.host}/local/hpc/alpha:1", f"dir:{tmp_path / 'pulled'}",
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    manifest = (tmp_path / "pulled" / "manifest.json").read_bytes()
    assert oci.sha256_digest(manifest) == seeded["tools/alpha:1.0"].digest
    for layer in json.loads(manifest)["layers"]:
        data = (tmp_path / "pulled" / layer["digest"].removeprefix("sha256:")).read_bytes()
        assert oci.sha256_digest(data) == layer["digest"]
    for instance in instances:  # both took part of the push
        assert '"PUT /v2/local/hpc/alpha/' in instance.log() or (
            '"POST /v2/local/hpc/alpha/' in instance.log()
        )

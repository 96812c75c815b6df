"""Tests of the test harness itself (tests/support), against the real docker-registry.

They prove that the upstreams the proxy tests rely on behave as claimed: the registry
starts, restarts and stops; seeded content reads back byte for byte; the access log
counts requests exactly; Basic and Bearer auth work; SIF files match the format tables;
and the fault injector breaks transfers in the documented ways.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support import oci
from tests.support.faulty import FAULT_MODES, FaultyUpstream
from tests.support.registry import (
    RegistryProcess,
    RegistryStartError,
    free_port,
    write_htpasswd,
)
from tests.support.seed import BIG_BLOB_SIZE, RegistryClient, Seeded, seed_all
from tests.support.sifwriter import (
    GO_ZERO_TIME,
    LEGACY_DATA_OFFSET,
    DefinitionFile,
    build_sif,
    example_sif,
    make_squashfs,
)
from tests.support.token_issuer import TokenIssuer

# --- shared fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryProcess]:
    with RegistryProcess() as process:
        yield process


@pytest.fixture(scope="module")
def client(registry: RegistryProcess) -> Iterator[RegistryClient]:
    session_client = RegistryClient(registry.url)
    yield session_client
    session_client.close()


@pytest.fixture(scope="module")
def seeded(client: RegistryClient) -> Seeded:
    return seed_all(client)


@pytest.fixture(scope="module")
def squashfs(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_squashfs(tmp_path_factory.mktemp("squashfs"))


# --- registry process ---------------------------------------------------------------------


def test_registry_restart_keeps_port_and_storage_and_stop_frees_port() -> None:
    with RegistryProcess() as reg:
        client = RegistryClient(reg.url)
        descriptor = client.push_blob("restart/check", b"survives a restart")
        first_pid, port = reg.pid, reg.port

        reg.restart()

        assert reg.port == port and reg.pid != first_pid
        assert client.blob_exists("restart/check", descriptor["digest"])
        reg.stop()
        assert reg.pid is None
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{reg.url}/v2/", timeout=2)
    assert not reg.workdir.exists()


def test_registry_start_failure_reports_stderr() -> None:
    reg = RegistryProcess(log_level="no-such-level", start_timeout=5)
    try:
        with pytest.raises(RegistryStartError, match="no-such-level"):
            reg.start()
        assert reg.pid is None
    finally:
        reg.close()


def test_access_log_counts_exactly_the_requests_made(
    registry: RegistryProcess, client: RegistryClient, seeded: Seeded
) -> None:
    alpha = seeded["tools/alpha:1.0"]
    since = registry.mark()

    client.get_manifest("tools/alpha", "1.0")
    client.get_manifest("tools/alpha", alpha.digest)
    client.request("HEAD", "/v2/tools/alpha/manifests/1.0", headers={"Accept": oci.OCI_MANIFEST})
    client.get_blob("tools/alpha", alpha.layers[0]["digest"])
    client.request("GET", "/v2/tools/alpha/manifests/no-such-tag?x=1")

    logged = registry.requests()[since:]
    assert [(r.method, r.status) for r in logged] == [
        ("GET", 200), ("GET", 200), ("HEAD", 200), ("GET", 200), ("GET", 404),
    ]  # fmt: skip
    assert logged[-1].path == "/v2/tools/alpha/manifests/no-such-tag"
    assert logged[-1].query == "x=1"
    assert registry.count("GET", "/manifests/", since=since) == 3
    assert registry.count("HEAD", since=since) == 1
    assert registry.count(path_contains="/blobs/", since=since) == 1
    assert registry.count(status=404, since=since) == 1
    assert registry.mark() == since + 5


def test_registry_proxy_mode_pulls_through_from_another_registry(
    registry: RegistryProcess, seeded: Seeded
) -> None:
    image = seeded["sif/legacy:oras-go-v1"]
    since = registry.mark()
    with RegistryProcess(proxy_remote_url=registry.url) as mirror:
        response = requests.get(
            f"{mirror.url}/v2/sif/legacy/manifests/oras-go-v1",
            headers={"Accept": oci.ACCEPT_ALL_MANIFESTS},
            timeout=10,
        )
        assert response.status_code == 200 and response.content == image.manifest
        assert requests.post(f"{mirror.url}/v2/x/blobs/uploads/", timeout=5).status_code == 405
    assert registry.count("GET", "/v2/sif/legacy/manifests/", since=since) == 1


def test_registry_proxy_mode_refuses_to_start_without_upstream() -> None:
    """distribution 2.8 pings the remote at start-up and panics if it is down."""
    with pytest.raises(RegistryStartError, match="panic: .*connection refused"):
        with RegistryProcess(proxy_remote_url=f"http://127.0.0.1:{free_port()}"):
            pass


# --- seeded content -----------------------------------------------------------------------

EXPECTED_REFERENCES = {
    "tools/alpha:1.0", "tools/alpha:latest", "tools/beta:2.0", "multi/app:1.0",
    "legacy/dockerimg:v2", "legacy/dockerlist:v1", "sif/tool:1.0", "sif/legacy:oras-go-v1",
    "sif/dockerv2:1.3.0", "sif/zeroconfig:3.7", "big/blob:1.0",
}  # fmt: skip


def test_seed_all_pushes_the_documented_set(seeded: Seeded) -> None:
    assert set(seeded.images) == EXPECTED_REFERENCES
    assert seeded["tools/alpha:1.0"].digest == seeded["tools/alpha:latest"].digest
    alpha_layers = {d["digest"] for d in seeded["tools/alpha:1.0"].layers}
    beta_layers = {d["digest"] for d in seeded["tools/beta:2.0"].layers}
    assert len(alpha_layers & beta_layers) == 1
    for reference, child_type in [("multi/app:1.0", oci.OCI_MANIFEST),
                                  ("legacy/dockerlist:v1", oci.DOCKER_MANIFEST)]:  # fmt: skip
        index = json.loads(seeded[reference].manifest)
        platforms = {(m["platform"]["os"], m["platform"]["architecture"])
                     for m in index["manifests"]}  # fmt: skip
        assert platforms == {("linux", "amd64"), ("linux", "arm64")}
        assert {c.media_type for c in seeded[reference].children} == {child_type}


def test_every_seeded_manifest_reads_back_byte_for_byte(
    client: RegistryClient, seeded: Seeded
) -> None:
    for image in seeded.all_manifests():
        response = client.get_manifest(image.repository, image.tag or image.digest)
        assert response.status_code == 200, image.reference
        assert response.content == image.manifest, image.reference
        assert response.headers["Docker-Content-Digest"] == image.digest
        assert image.digest == "sha256:" + hashlib.sha256(response.content).hexdigest()
        assert response.headers["Content-Type"] == image.media_type, image.reference


def test_small_blobs_read_back(client: RegistryClient, seeded: Seeded) -> None:
    for image in seeded.all_manifests():
        for digest, data in image.blob_data.items():
            assert client.get_blob(image.repository, digest).content == data


def test_image_config_is_realistic_and_go_escaped(seeded: Seeded) -> None:
    alpha = seeded["tools/alpha:1.0"]
    raw = alpha.blob_data[alpha.config["digest"]]
    assert b"\\u0026" in raw and b"\\u003c" in raw and b"&" not in raw
    config = json.loads(raw)
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    assert config["config"]["Labels"]["org.opencontainers.image.title"] == "alpha"
    assert config["config"]["Entrypoint"] == ["/opt/alpha/bin/alpha"]
    assert len(config["rootfs"]["diff_ids"]) == len(alpha.layers) == len(config["history"])


SIF_REFERENCES = (
    "sif/tool:1.0", "sif/legacy:oras-go-v1", "sif/dockerv2:1.3.0", "sif/zeroconfig:3.7",
)  # fmt: skip


def test_sif_generations_have_their_media_types(seeded: Seeded) -> None:
    def manifest(ref: str) -> dict:
        return json.loads(seeded[ref].manifest)

    assert manifest("sif/tool:1.0")["config"]["mediaType"] == oci.SIF_CONFIG
    legacy = manifest("sif/legacy:oras-go-v1")
    assert "mediaType" not in legacy
    assert legacy["config"] == {
        "mediaType": oci.ORAS_UNKNOWN_CONFIG,
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "size": 2,
    }
    assert seeded["sif/dockerv2:1.3.0"].media_type == oci.DOCKER_MANIFEST
    zero = manifest("sif/zeroconfig:3.7")["config"]
    assert zero["size"] == 0
    assert zero["digest"] == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    for ref in SIF_REFERENCES:
        image = seeded[ref]
        [layer] = manifest(ref)["layers"]
        assert layer["mediaType"] == oci.SIF_LAYER
        assert layer["annotations"]["org.opencontainers.image.title"].endswith(".sif")
        assert image.blob_data[layer["digest"]][32:42] == b"SIF_MAGIC\0"


def test_big_blob_streams_back_with_odd_size(client: RegistryClient, seeded: Seeded) -> None:
    [layer] = seeded["big/blob:1.0"].layers
    assert layer["size"] == BIG_BLOB_SIZE == 64 * 1024 * 1024 + 1
    response = client.get_blob("big/blob", layer["digest"], stream=True)
    assert int(response.headers["Content-Length"]) == BIG_BLOB_SIZE
    digest, size = oci.digest_of_stream(response.iter_content(1 << 20))
    assert (digest, size) == (layer["digest"], BIG_BLOB_SIZE)


# --- auth ---------------------------------------------------------------------------------


def test_htpasswd_registry_rejects_anonymous_and_accepts_basic(tmp_path: Path) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd", "alice", "s3cret")
    with RegistryProcess(auth=("htpasswd", htpasswd)) as reg:
        anonymous = requests.get(f"{reg.url}/v2/", timeout=5)
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
        for password, status in (("wrong", 401), ("s3cret", 200)):
            response = requests.get(f"{reg.url}/v2/", auth=("alice", password), timeout=5)
            assert response.status_code == status

        client = RegistryClient(reg.url, username="alice", password="s3cret")
        digest = client.push_manifest(*_tiny_image(client, "private/img"))
        assert client.get_manifest("private/img", "1").headers["Docker-Content-Digest"] == digest


@pytest.mark.parametrize("key_hint", ["x5c", "kid"])
def test_token_registry_rejects_anonymous_and_accepts_issued_tokens(
    tmp_path: Path, key_hint: str
) -> None:
    with (
        TokenIssuer("bob", "pw", workdir=tmp_path, key_hint=key_hint) as issuer,
        RegistryProcess(auth=("token", issuer.settings)) as reg,
    ):
        challenge = requests.get(f"{reg.url}/v2/", timeout=5)
        assert challenge.status_code == 401
        assert f'realm="{issuer.realm}"' in challenge.headers["WWW-Authenticate"]

        params = {"service": issuer.service, "scope": "repository:private/img:pull"}
        assert requests.get(issuer.realm, params=params, timeout=5).status_code == 401
        assert issuer.rejected_count == 1
        body = requests.get(issuer.realm, params=params, auth=("bob", "pw"), timeout=5).json()
        assert body["token"] == body["access_token"] and body["expires_in"] == 300
        bearer = {"Authorization": f"Bearer {body['token']}"}
        assert requests.get(f"{reg.url}/v2/", headers=bearer, timeout=5).status_code == 200
        other_repo = requests.get(f"{reg.url}/v2/other/tags/list", headers=bearer, timeout=5)
        assert other_repo.status_code == 401
        assert 'error="insufficient_scope"' in other_repo.headers["WWW-Authenticate"]

        client = RegistryClient(reg.url, username="bob", password="pw")
        digest = client.push_manifest(*_tiny_image(client, "private/img"))
        assert client.get_manifest("private/img", "1").content
        assert issuer.issued_count == 3  # ours, the push scope, the pull scope
        assert issuer.scopes[-2:] == [
            "repository:private/img:pull,push",
            "repository:private/img:pull",
        ]
        assert digest.startswith("sha256:")


def _tiny_image(client: RegistryClient, repository: str) -> tuple[str, str, bytes, str]:
    """Push a one-layer OCI image's blobs; return push_manifest's arguments."""
    config = client.push_blob(repository, b"{}", oci.OCI_CONFIG)
    layer = client.push_blob(repository, b"layer bytes", oci.OCI_LAYER_TAR)
    manifest = oci.image_manifest(oci.OCI_MANIFEST, config, [layer])
    return repository, "1", manifest, oci.OCI_MANIFEST


# --- SIF layout, checked against the format tables (not the writer's constants) -------------


def _u32(data: bytes, offset: int) -> int:
    return struct.unpack_from("<I", data, offset)[0]


def _i64(data: bytes, offset: int) -> int:
    return struct.unpack_from("<q", data, offset)[0]


def test_example_sif_header_and_descriptors_follow_the_spec(squashfs: bytes) -> None:
    sif = example_sif(squashfs, name="tool", version="1.0", arch="amd64", created=1_700_000_000)
    data = sif.data

    # Global header (B1): fixed offsets.
    assert data[:31] == b"#!/usr/bin/env run-singularity\n" and data[31] == 0
    assert data[32:42] == b"SIF_MAGIC\x00"
    assert data[42:45] == b"01\x00"
    assert data[45:48] == b"02\x00"  # amd64, copied from the PrimSys partition
    assert data[48:64] != bytes(16)
    assert _i64(data, 64) == _i64(data, 72) == 1_700_000_000
    assert _i64(data, 80) == 48 - 4  # free slots
    assert _i64(data, 88) == 48  # total
    assert _i64(data, 96) == 4096  # descriptors offset
    assert _i64(data, 104) == 48 * 585 == 28080
    assert _i64(data, 112) == 4096 + 28080 == 32176  # data offset
    assert _i64(data, 120) == len(data) - 32176  # data size

    def descriptor(slot: int) -> dict:
        base = 4096 + slot * 585
        return {
            "type": struct.unpack_from("<i", data, base)[0],
            "used": data[base + 4],
            "id": _u32(data, base + 5),
            "group": _u32(data, base + 9),
            "link": _u32(data, base + 13),
            "offset": _i64(data, base + 17),
            "size": _i64(data, base + 25),
            "padded": _i64(data, base + 33),
            "created": _i64(data, base + 41),
            "name": data[base + 73 : base + 201].rstrip(b"\0"),
            "extra": data[base + 201 : base + 585],
        }

    deffile, metadata, partition, signature = (descriptor(i) for i in range(4))
    assert all(descriptor(i)["used"] == 0 for i in range(4, 48))
    assert data[4096 + 4 * 585 : 4096 + 48 * 585] == bytes(44 * 585)

    assert (deffile["type"], deffile["used"], deffile["id"]) == (0x4001, 1, 1)
    assert (deffile["group"], deffile["link"]) == (0xF0000001, 0)
    assert deffile["offset"] == 32176 and deffile["created"] == 1_700_000_000
    assert data[deffile["offset"] : deffile["offset"] + deffile["size"]] == sif.definition.encode()

    assert (metadata["type"], metadata["id"]) == (0x4006, 2)
    assert metadata["name"] == b"inspect-metadata.json"
    assert metadata["offset"] == deffile["offset"] + deffile["size"]
    inspect = json.loads(data[metadata["offset"] : metadata["offset"] + metadata["size"]])
    assert inspect["type"] == "container"
    labels = inspect["data"]["attributes"]["labels"]
    assert labels == sif.labels
    assert labels["org.label-schema.build-arch"] == "amd64"
    assert labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert labels["org.label-schema.build-date"] == "Tuesday_14_November_2023_22:13:20_UTC"

    assert (partition["type"], partition["id"]) == (0x4004, 3)
    assert partition["offset"] % 4096 == 0
    gap = partition["offset"] - (metadata["offset"] + metadata["size"])
    assert 0 <= gap < 4096 and partition["padded"] == partition["size"] + gap
    assert struct.unpack_from("<ii", partition["extra"]) == (1, 2)  # squashfs, PrimSys
    assert partition["extra"][8:11] == b"02\x00"
    assert data[partition["offset"] : partition["offset"] + 4] == b"hsqs"
    assert data[partition["offset"] : partition["offset"] + partition["size"]] == squashfs

    assert (signature["type"], signature["id"]) == (0x4005, 4)
    assert (signature["group"], signature["link"]) == (0xF0000000, 0xF0000001)
    assert struct.unpack_from("<i", signature["extra"])[0] == 1  # SHA256
    assert signature["extra"][4:24] == sif.fingerprint
    sig_data = data[signature["offset"] : signature["offset"] + signature["size"]]
    assert sig_data.startswith(b"-----BEGIN PGP SIGNED MESSAGE-----")
    assert signature["offset"] + signature["size"] == len(data)


def test_sif_variants_empty_legacy_deterministic_truncated(squashfs: bytes) -> None:
    empty = build_sif([])
    assert len(empty) == 32176 and empty[45:48] == b"00\x00" and _i64(empty, 120) == 0

    legacy = example_sif(squashfs, data_offset=LEGACY_DATA_OFFSET).data
    assert _i64(legacy, 112) == 32768
    assert _i64(legacy, 4096 + 17) == 32768  # first object starts at the data offset

    deterministic = example_sif(squashfs, created=GO_ZERO_TIME).data
    assert _i64(deterministic, 64) == _i64(deterministic, 72) == -62135596800
    assert _i64(deterministic, 4096 + 41) == -62135596800
    undated = example_sif(squashfs, created=GO_ZERO_TIME).labels
    assert "org.opencontainers.image.created" not in undated

    cut = build_sif([DefinitionFile(data=b"Bootstrap: scratch\n")], truncate_to=1000)
    assert len(cut) == 1000 and cut[32:42] == b"SIF_MAGIC\x00"


def test_sif_and_squashfs_are_reproducible(squashfs: bytes, tmp_path: Path) -> None:
    assert make_squashfs(tmp_path) == squashfs
    assert example_sif(squashfs).data == example_sif(squashfs).data


# --- fault injection ----------------------------------------------------------------------


def _raw_get(upstream: FaultyUpstream, timeout: float = 5.0, headers: dict | None = None):
    """GET the layer with http.client: ``(status, headers, body_received, error)``."""
    conn = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=timeout)
    received = bytearray()
    try:
        conn.request("GET", upstream.layer_path, headers=headers or {})
        response = conn.getresponse()
        error: Exception | None = None
        try:
            while chunk := response.read1(65536):
                received += chunk
            if response.length:  # bytes still owed when the server closed
                error = http.client.IncompleteRead(bytes(received), response.length)
        except (ConnectionError, TimeoutError) as exc:
            error = exc
        return response.status, dict(response.getheaders()), bytes(received), error
    finally:
        conn.close()


def test_fault_modes_cover_the_documented_list() -> None:
    assert set(FAULT_MODES) == {
        "ok", "truncated", "wrong_digest", "reset", "status500", "status429", "slow", "hang",
        "stall",
    }  # fmt: skip


def test_faulty_ok_serves_manifest_and_layer_with_ranges() -> None:
    with FaultyUpstream("ok") as upstream:
        assert requests.get(f"{upstream.url}/v2/", timeout=5).status_code == 200
        manifest = requests.get(f"{upstream.url}/v2/fault/img/manifests/1.0", timeout=5)
        assert manifest.headers["Docker-Content-Digest"] == upstream.manifest_digest
        assert json.loads(manifest.content)["layers"][0]["digest"] == upstream.layer_digest
        status, headers, body, error = _raw_get(upstream)
        assert (status, error) == (200, None)
        assert oci.sha256_digest(body) == upstream.layer_digest
        assert len(body) == upstream.layer_size
        status, headers, body, _ = _raw_get(upstream, headers={"Range": "bytes=100-199"})
        assert status == 206 and headers["Content-Range"].startswith("bytes 100-199/")
        assert body == upstream.layer[100:200]
        assert upstream.counts[("GET", upstream.layer_path)] == 2
        assert upstream.count("GET", "/manifests/") == 1


@pytest.mark.parametrize(
    "mode, expected_received, error_type",
    [
        ("truncated", "half", http.client.IncompleteRead),
        ("reset", "part", ConnectionResetError),
        ("wrong_digest", "all", None),
    ],
)
def test_faulty_broken_bodies(mode: str, expected_received: str, error_type: type | None) -> None:
    with FaultyUpstream(mode) as upstream:  # type: ignore[arg-type]
        status, headers, body, error = _raw_get(upstream)
        assert status == 200 and int(headers["Content-Length"]) == upstream.layer_size
        if error_type is None:
            assert error is None
        else:
            assert isinstance(error, error_type), error
        if expected_received == "half":
            assert body == upstream.layer[: upstream.layer_size // 2]
        elif expected_received == "part":
            assert 0 < len(body) < upstream.layer_size
        else:
            assert len(body) == upstream.layer_size
            assert oci.sha256_digest(body) != upstream.layer_digest


@pytest.mark.parametrize("mode, status", [("status500", 500), ("status429", 429)])
def test_faulty_error_statuses(mode: str, status: int) -> None:
    with FaultyUpstream(mode) as upstream:  # type: ignore[arg-type]
        for method in ("GET", "HEAD"):
            response = requests.request(method, upstream.url + upstream.layer_path, timeout=5)
            assert response.status_code == status
        if status == 429:
            assert response.headers["Retry-After"] == "1"
        assert upstream.counts[("HEAD", upstream.layer_path)] == 1


def test_faulty_slow_and_hang_time_out() -> None:
    with FaultyUpstream("slow", slow_chunk=1024, slow_interval=0.5) as upstream:
        status, _, body, error = _raw_get(upstream, timeout=0.3)
        assert status == 200 and isinstance(error, TimeoutError)
        assert len(body) < upstream.layer_size
    with FaultyUpstream("hang") as upstream:
        with pytest.raises(requests.Timeout):
            requests.get(upstream.url + upstream.layer_path, timeout=0.5)
        assert upstream.counts[("GET", upstream.layer_path)] == 1
    with FaultyUpstream("stall") as upstream:
        status, _, body, error = _raw_get(upstream, timeout=0.5)
        assert status == 200 and isinstance(error, TimeoutError)
        assert body == upstream.layer[: upstream.layer_size // 4]


def test_faulty_fail_times_then_recovers() -> None:
    with FaultyUpstream("truncated", fail_times=1) as upstream:
        assert isinstance(_raw_get(upstream)[3], http.client.IncompleteRead)
        status, _, body, error = _raw_get(upstream)
        assert (status, error) == (200, None) and body == upstream.layer
        upstream.mode = "status500"
        assert requests.get(upstream.url + upstream.layer_path, timeout=5).status_code == 200


def test_faulty_slow_honours_a_range_and_records_transfers() -> None:
    with FaultyUpstream("slow", slow_chunk=512 * 1024, slow_interval=0.01) as upstream:
        status, headers, body, error = _raw_get(upstream, headers={"Range": "bytes=1000-"})
        assert (status, error) == (206, None)
        assert (
            headers["Content-Range"]
            == f"bytes 1000-{upstream.layer_size - 1}/{upstream.layer_size}"
        )
        assert body == upstream.layer[1000:]
        upstream.mode = "ok"
        assert _raw_get(upstream)[2] == upstream.layer
        assert [(t.range, t.sent) for t in upstream.layer_transfers] == [
            ("bytes=1000-", upstream.layer_size - 1000),
            (None, upstream.layer_size),
        ]
    with FaultyUpstream("slow", slow_interval=0.001, ignore_range=True) as upstream:
        status, headers, body, _ = _raw_get(upstream, headers={"Range": "bytes=1000-"})
        assert status == 200 and "Content-Range" not in headers and body == upstream.layer

"""An upstream serving HTTPS with a certificate from a site's own CA (an internal Harbor):
trusted through `upstreams.<name>.ca_file` for that upstream only, and without it a clear
502 that names the TLS failure and leaks no credentials."""

from __future__ import annotations

import base64
import hashlib
import time

import pytest
import requests

from tests.conftest import upstream_entry
from tests.support import oci
from tests.support.faulty import FaultyUpstream
from tests.support.registry import RegistryProcess, write_htpasswd
from tests.support.seed import RegistryClient, SeededImage, publish_image
from tests.support.tls import LoopbackCA, make_loopback_ca

USER, PASSWORD = "harbor-robot", "tls-pa55-not-in-logs"
ACCEPT = {"Accept": oci.ACCEPT_ALL_MANIFESTS}
ENV = {"TEST_HARBOR_PASSWORD": PASSWORD}


@pytest.fixture
def tls_upstream(tmp_path) -> tuple[RegistryProcess, LoopbackCA]:
    """docker-registry serving HTTPS with Basic auth; its certificate is signed by a CA
    made for this test, which nothing on the system trusts."""
    ca = make_loopback_ca(tmp_path / "ca")
    htpasswd = write_htpasswd(tmp_path / "htpasswd", USER, PASSWORD)
    with RegistryProcess(auth=("htpasswd", htpasswd), tls=ca, workdir=tmp_path / "reg") as registry:
        yield registry, ca


def _seed(registry: RegistryProcess, ca: LoopbackCA) -> SeededImage:
    client = RegistryClient(registry.url, username=USER, password=PASSWORD, ca_file=str(ca.ca_file))
    try:
        [image] = publish_image(
            client,
            "site/app",
            ["1.0"],
            oci.ImageConfigSpec(title="site app", version="1.0"),
            [oci.make_layer("tls", {"payload": 3 * 1024 * 1024}, "PAYLOAD")],
        )
    finally:
        client.close()
    return image


def _harbor(registry: RegistryProcess, prefix: str, **extra: str) -> dict:
    return upstream_entry(
        registry.url,
        prefix=prefix,
        default=False,
        username=USER,
        password_env="TEST_HARBOR_PASSWORD",
        **extra,
    )


def _no_credentials_in(log: str) -> None:
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert PASSWORD not in log and basic not in log and "Authorization" not in log


def test_pull_through_an_upstream_signed_by_a_site_ca(make_proxy, tls_upstream):
    """With ca_file the pull works, bytes verified; the same registry under a second
    upstream without ca_file stays untrusted (the bundle is per upstream)."""
    registry, ca = tls_upstream
    image = _seed(registry, ca)
    proxy = make_proxy(
        {
            "harbor": _harbor(registry, "harbor.test", ca_file=str(ca.ca_file)),
            "other": _harbor(registry, "other.test"),
        },
        env=ENV,
    )
    manifest = requests.get(
        f"{proxy.url}/v2/harbor.test/site/app/manifests/1.0", headers=ACCEPT, timeout=30
    )
    assert manifest.status_code == 200, manifest.text
    assert manifest.content == image.manifest
    for blob in image.blobs:
        got = requests.get(
            f"{proxy.url}/v2/harbor.test/site/app/blobs/{blob['digest']}", timeout=60
        )
        assert got.status_code == 200
        assert "sha256:" + hashlib.sha256(got.content).hexdigest() == blob["digest"]
    assert max(blob["size"] for blob in image.blobs) > 3 * 1024 * 1024

    other = requests.get(
        f"{proxy.url}/v2/other.test/site/app/manifests/1.0", headers=ACCEPT, timeout=30
    )
    assert other.status_code == 502
    _no_credentials_in(proxy.log())


def test_an_untrusted_certificate_is_a_clear_502(make_proxy, tls_upstream):
    registry, ca = tls_upstream
    image = _seed(registry, ca)
    proxy = make_proxy({"harbor": _harbor(registry, "harbor.test")}, env=ENV)
    mark = registry.mark()
    for path in ("manifests/1.0", f"blobs/{image.blobs[-1]['digest']}"):
        response = requests.get(
            f"{proxy.url}/v2/harbor.test/site/app/{path}", headers=ACCEPT, timeout=30
        )
        assert response.status_code == 502, response.text
        [error] = response.json()["errors"]
        assert error["code"] == "UNAVAILABLE"
        assert "TLS certificate of upstream harbor did not verify" in error["message"]
        assert "upstreams.harbor.ca_file" in error["message"]
    assert registry.count(since=mark) == 0  # refused at the handshake: nothing was sent
    log = proxy.log()
    assert "did not verify" in log
    _no_credentials_in(log)


@pytest.fixture
def faulty_tls(tmp_path):
    """The fault-injecting upstream over HTTPS, with a CA made for the test."""
    ca = make_loopback_ca(tmp_path / "faulty-ca")
    servers: list[FaultyUpstream] = []

    def make(mode: str, **kwargs) -> FaultyUpstream:
        server = FaultyUpstream(mode, tls=ca, **kwargs).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make, ca
    for server in servers:
        server.stop()


def _tls_proxy(make_proxy, server: FaultyUpstream, ca: LoopbackCA):
    entry = {"url": server.url, "prefix": "faulty.test", "default": True}
    return make_proxy({"faulty": {**entry, "ca_file": str(ca.ca_file)}})


def _blob_get(proxy, path: str) -> tuple[int, bytes]:
    """Status and the body received, without raising when the proxy cuts it short."""
    received = b""
    with requests.get(proxy.url + path, stream=True, timeout=60) as response:
        try:
            for chunk in response.iter_content(256 * 1024):
                received += chunk
        except requests.exceptions.ChunkedEncodingError:
            pass
        return response.status_code, received


def test_a_tls_fill_streams_while_it_fills_and_survives_its_client(make_proxy, faulty_tls):
    make, ca = faulty_tls
    server = make("slow", slow_chunk=256 * 1024, slow_interval=0.1)
    proxy = _tls_proxy(make_proxy, server, ca)
    with requests.get(proxy.url + server.layer_path, stream=True, timeout=30) as response:
        assert response.status_code == 200
        assert next(response.iter_content(64 * 1024))
        assert server.layer_digest.split(":")[1] not in proxy.stored_blobs()
    # The client hung up; the fill goes on and stores the verified blob.
    assert proxy.wait_stored(server.layer_digest) == server.layer_size
    status, body = _blob_get(proxy, server.layer_path)
    assert status == 200 and body == server.layer
    assert server.count("GET", "/blobs/sha256") == 1


@pytest.mark.parametrize("mode", ["truncated", "wrong_digest", "reset", "stall"])
def test_a_broken_tls_body_is_cut_short_and_stores_nothing(make_proxy, faulty_tls, mode):
    make, ca = faulty_tls
    server = make(mode)
    proxy = _tls_proxy(make_proxy, server, ca)
    status, body = _blob_get(proxy, server.layer_path)
    assert status == 200 and len(body) < server.layer_size  # never looks complete
    deadline = time.monotonic() + 10
    while proxy.temp_files() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.stored_blobs() == {} and proxy.temp_files() == []
    proxy.wait_log(f"fill of {server.layer_digest}")

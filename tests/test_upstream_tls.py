"""An upstream serving HTTPS with a certificate from a site's own CA (an internal Harbor):
trusted through `upstreams.<name>.ca_file` for that upstream only, and without it a clear
502 that names the TLS failure and leaks no credentials."""

from __future__ import annotations

import base64
import hashlib

import pytest
import requests

from tests.conftest import upstream_entry
from tests.support import oci
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

"""The proxy pulls through upstreams that require Basic (htpasswd) and Bearer token auth,
using its own configured credentials, caching tokens, and never leaking them."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.conftest import upstream_entry
from tests.support import oci
from tests.support.registry import RegistryProcess, free_port
from tests.support.seed import RegistryClient, publish_image
from tests.support.token_issuer import TokenIssuer

USER, PASSWORD = "mirror-robot", "pa55-w0rd-not-in-logs"
ACCEPT = {"Accept": oci.ACCEPT_ALL_MANIFESTS}


def _seed(registry_url: str):
    client = RegistryClient(registry_url, username=USER, password=PASSWORD)
    try:
        [image] = publish_image(
            client,
            "secure/app",
            ["1.0"],
            oci.ImageConfigSpec(title="secure", version="1.0"),
            [oci.make_layer("secure", {"s": 30000}, "S")],
        )
    finally:
        client.close()
    return image


@pytest.fixture
def htpasswd_upstream(tmp_path):
    htpasswd = tmp_path / "htpasswd"
    line = subprocess.run(
        ["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True
    ).stdout
    htpasswd.write_text(line)
    with RegistryProcess(auth=("htpasswd", htpasswd), workdir=tmp_path / "reg") as registry:
        yield registry


@pytest.fixture
def token_upstream(tmp_path):
    with TokenIssuer(USER, PASSWORD, workdir=tmp_path) as issuer:
        with RegistryProcess(auth=("token", issuer.settings), workdir=tmp_path / "reg") as registry:
            yield registry, issuer


def _pull_everything(proxy, image) -> None:
    response = requests.get(f"{proxy.url}/v2/secure/app/manifests/1.0", headers=ACCEPT, timeout=30)
    assert response.status_code == 200, response.text
    assert response.content == image.manifest
    for blob in image.blobs:
        got = requests.get(f"{proxy.url}/v2/secure/app/blobs/{blob['digest']}", timeout=30)
        assert got.status_code == 200
        assert got.headers["Docker-Content-Digest"] == blob["digest"]
        assert len(got.content) == blob["size"]


def _credentialed(registry_url: str) -> dict:
    return upstream_entry(registry_url, username=USER, password_env="TEST_UPSTREAM_PASSWORD")


def test_basic_auth_upstream(make_proxy, htpasswd_upstream):
    image = _seed(htpasswd_upstream.url)
    proxy = make_proxy(
        {"basic": _credentialed(htpasswd_upstream.url)}, env={"TEST_UPSTREAM_PASSWORD": PASSWORD}
    )
    _pull_everything(proxy, image)
    assert PASSWORD not in proxy.log()
    assert PASSWORD not in proxy.config_path.read_text()


def test_token_auth_upstream_caches_the_token(make_proxy, token_upstream):
    registry, issuer = token_upstream
    image = _seed(registry.url)
    proxy = make_proxy(
        {"token": _credentialed(registry.url)}, env={"TEST_UPSTREAM_PASSWORD": PASSWORD}
    )
    issued_before = issuer.issued_count
    _pull_everything(proxy, image)
    # one scope (repository:secure/app:pull): one token for the manifest and every blob
    assert issuer.issued_count - issued_before == 1
    assert issuer.scopes[-1] == "repository:secure/app:pull"
    log = proxy.log()
    assert PASSWORD not in log and "Bearer" not in log and "eyJ" not in log


def test_missing_credentials_give_denied_not_a_crash(make_proxy, htpasswd_upstream):
    _seed(htpasswd_upstream.url)
    proxy = make_proxy({"basic": upstream_entry(htpasswd_upstream.url)})
    response = requests.get(f"{proxy.url}/v2/secure/app/manifests/1.0", headers=ACCEPT, timeout=30)
    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == "DENIED"


def test_wrong_credentials_are_refused(make_proxy, token_upstream):
    registry, _ = token_upstream
    _seed(registry.url)
    proxy = make_proxy(
        {"token": _credentialed(registry.url)}, env={"TEST_UPSTREAM_PASSWORD": "Wr0ng-S3cret-77"}
    )
    response = requests.get(f"{proxy.url}/v2/secure/app/manifests/1.0", headers=ACCEPT, timeout=30)
    assert response.status_code == 403
    assert "Wr0ng-S3cret-77" not in proxy.log()


def test_sighup_reads_a_rotated_password_file_and_keeps_the_old_password_on_failure(
    make_proxy, token_upstream, tmp_path
):
    registry, _ = token_upstream
    image = _seed(registry.url)
    client = RegistryClient(registry.url, username=USER, password=PASSWORD)
    spec = oci.ImageConfigSpec(title="other", version="2.0")
    publish_image(client, "secure/other", ["2.0"], spec, [oci.make_layer("o", {"o": 10}, "O")])
    client.close()
    password_file = tmp_path / "upstream.password"
    password_file.write_text("Wr0ng-S3cret-77\n")
    entry = upstream_entry(registry.url, username=USER, password_file=str(password_file))
    proxy = make_proxy({"token": entry})
    manifest = f"{proxy.url}/v2/secure/app/manifests/1.0"
    assert requests.get(manifest, headers=ACCEPT, timeout=30).status_code == 403
    password_file.write_text(PASSWORD + "\n")  # the site rotates the mirror's password
    assert proxy.pid is not None
    os.kill(proxy.pid, signal.SIGHUP)
    proxy.wait_log("SIGHUP: upstream passwords: token (changed)")
    _pull_everything(proxy, image)
    password_file.unlink()
    os.kill(proxy.pid, signal.SIGHUP)
    log = proxy.wait_log("SIGHUP: upstream passwords: token (kept: see the error above)")
    assert (
        "upstream token: password not reloaded, still using the previous one: "
        f"password_file: cannot read {password_file}: No such file or directory"
    ) in log
    # another repository: a token of a new scope, bought with the password kept
    response = requests.get(f"{proxy.url}/v2/secure/other/tags/list", timeout=30)
    assert response.status_code == 200 and response.json()["tags"] == ["2.0"]
    assert PASSWORD not in proxy.log() and "Wr0ng-S3cret-77" not in proxy.log()


def test_client_credentials_are_not_forwarded(make_proxy, htpasswd_upstream):
    """A client's own Authorization header never reaches the upstream: the mirror uses
    only its configured credentials (here: none, so the upstream refuses)."""
    _seed(htpasswd_upstream.url)
    proxy = make_proxy({"basic": upstream_entry(htpasswd_upstream.url)})
    response = requests.get(
        f"{proxy.url}/v2/secure/app/manifests/1.0",
        headers=ACCEPT,
        auth=(USER, PASSWORD),
        timeout=30,
    )
    assert response.status_code == 403


class _RecordingHandler(BaseHTTPRequestHandler):
    """Registry host A (Basic auth, redirects blobs) or storage host B (records headers)."""

    role = "registry"
    storage_url = ""
    blob = b""
    seen_authorization: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        if self.role == "storage":
            type(self).seen_authorization.append(self.headers.get("Authorization"))
            self._answer(200, self.blob)
        elif self.headers.get("Authorization") != _basic_header():
            self._answer(401, b"{}", {"WWW-Authenticate": 'Basic realm="test"'})
        else:
            self._answer(307, b"", {"Location": self.storage_url + "/storage/blob?sig=abc"})

    def _answer(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _basic_header() -> str:
    import base64

    return "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.fixture
def redirecting_upstream():
    """A registry on 127.0.0.1 that redirects blob GETs to storage on 127.0.0.2, a different
    host: a cross-host redirect the filesystem-backed docker-registry cannot produce."""
    blob = b"redirected blob bytes" * 1000
    storage_port, registry_port = free_port(), free_port()
    storage_cls = type(
        "Storage", (_RecordingHandler,), {"role": "storage", "blob": blob, "seen_authorization": []}
    )
    registry_cls = type(
        "Registry",
        (_RecordingHandler,),
        {"role": "registry", "storage_url": f"http://127.0.0.2:{storage_port}"},
    )
    servers = [
        ThreadingHTTPServer(("127.0.0.2", storage_port), storage_cls),
        ThreadingHTTPServer(("127.0.0.1", registry_port), registry_cls),
    ]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    yield f"http://127.0.0.1:{registry_port}", blob, storage_cls
    for server in servers:
        server.shutdown()
        server.server_close()


def test_redirect_to_another_host_drops_authorization(make_proxy, redirecting_upstream):
    url, blob, storage = redirecting_upstream
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    proxy = make_proxy(
        {"redirecting": _credentialed(url)}, env={"TEST_UPSTREAM_PASSWORD": PASSWORD}
    )
    response = requests.get(f"{proxy.url}/v2/some/repo/blobs/{digest}", timeout=30)
    assert response.status_code == 200 and response.content == blob
    assert storage.seen_authorization == [None]
    assert "sig=abc" not in proxy.log()

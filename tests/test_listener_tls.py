"""TLS on the mirror's own listener: a real `mirror serve` with `[server] tls_cert` and
`tls_key` from a test CA; TLS 1.2+ only, and SIGHUP swapping the certificate for new
handshakes while connections made before go on."""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import socket
import ssl
import time
import warnings
from pathlib import Path

import pytest
from cryptography import x509

from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support.processes import LOOPBACK
from tests.support.proxy import ProxyProcess, proxy_config
from tests.support.tls import LoopbackCA

RELOADED = "reloaded TLS certificate"
NOT_RELOADED = "TLS certificate not reloaded"


def _connect(proxy: ProxyProcess, context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
    raw = socket.create_connection((LOOPBACK, proxy.port), timeout=30)
    return (context or proxy.tls or ssl.create_default_context()).wrap_socket(
        raw, server_hostname=LOOPBACK
    )


def _serial(connection: ssl.SSLSocket) -> int:
    certificate = connection.getpeercert()
    assert certificate
    return int(str(certificate["serialNumber"]), 16)


def _presented_serial(proxy: ProxyProcess) -> int:
    """The serial number of the certificate a new connection is shown."""
    with _connect(proxy) as connection:
        return _serial(connection)


def _serial_of(cert_file: Path) -> int:
    return x509.load_pem_x509_certificate(cert_file.read_bytes()).serial_number


def _hang_up(proxy: ProxyProcess) -> None:
    assert proxy.pid is not None
    os.kill(proxy.pid, signal.SIGHUP)


def test_listener_speaks_tls_12_and_13(tls_proxy, listener_ca):
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = listener_ca.client_context()
        context.minimum_version = context.maximum_version = version
        connection = http.client.HTTPSConnection(LOOPBACK, tls_proxy.port, context=context)
        connection.request("GET", "/v2/")
        assert connection.getresponse().status == 200
        assert connection.sock.version() == version.name.replace("_", ".")
        connection.close()


def _client_context(ca: LoopbackCA, highest: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that offers TLS 1.1 up to `highest` (this OpenSSL offers TLS 1.1 only at
    security level 0)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca.ca_file)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = highest
    return context


def test_a_tls_11_handshake_is_refused(tls_proxy, listener_ca):
    # asyncio closes a failed handshake without flushing OpenSSL's alert: the client sees
    # the connection end. The same client allowed TLS 1.2 gets it, so TLS 1.1 is the cause.
    with pytest.raises(ssl.SSLError):
        _connect(tls_proxy, _client_context(listener_ca, ssl.TLSVersion.TLSv1_1)).close()
    with _connect(tls_proxy, _client_context(listener_ca, ssl.TLSVersion.TLSv1_2)) as connection:
        assert connection.version() == "TLSv1.2"


def _start_blob_download(proxy: ProxyProcess, digest: str) -> tuple[ssl.SSLSocket, int, bytes]:
    """GET a blob on a new connection and read its head and a little of its body; returns
    the connection, the Content-Length and the body bytes read so far."""
    connection = _connect(proxy)
    connection.sendall(
        f"GET /v2/{UPSTREAM_PREFIX}/big/blob/blobs/{digest} HTTP/1.1\r\n"
        f"Host: {proxy.host}\r\n\r\n".encode()
    )
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < 1 << 20:
        body += connection.recv(1 << 20)
    return connection, length, body


def _finish_download(connection: ssl.SSLSocket, length: int, body: bytes) -> str:
    digest = hashlib.sha256(body)
    received = len(body)
    buffer = bytearray(4 << 20)
    while received < length:
        count = connection.recv_into(buffer)
        assert count, f"connection closed after {received} of {length} bytes"
        digest.update(memoryview(buffer)[:count])
        received += count
    return f"sha256:{digest.hexdigest()}"


def test_sighup_presents_a_renewed_certificate_while_open_connections_go_on(
    tls_proxy, listener_ca, seeded, tmp_path
):
    blob = seeded.big_blob
    first = _presented_serial(tls_proxy)
    assert first == _serial_of(listener_ca.cert_file)
    keep_alive = http.client.HTTPSConnection(LOOPBACK, tls_proxy.port, context=tls_proxy.tls)
    keep_alive.request("GET", "/v2/")
    assert keep_alive.getresponse().read() == b"{}"
    downloading, length, start = _start_blob_download(tls_proxy, blob.digest)
    assert _serial(downloading) == first

    renewed = listener_ca.issue(listener_ca.cert_file, listener_ca.key_file)
    assert renewed != first
    _hang_up(tls_proxy)
    log = tls_proxy.wait_log(RELOADED)

    assert f"serial {renewed:x}" in log
    assert "PRIVATE KEY" not in log and "BEGIN" not in log
    assert _presented_serial(tls_proxy) == renewed
    # A keep-alive connection from before the reload goes on with its certificate.
    keep_alive.request("GET", "/v2/")
    assert keep_alive.getresponse().read() == b"{}"
    assert _serial(keep_alive.sock) == first
    keep_alive.close()
    # The download started before the reload completes, and its bytes verify.
    with downloading:
        assert length == blob.size
        assert _finish_download(downloading, length, start) == blob.digest


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("garbage certificate", "holds no PEM certificate"),
        ("key of another certificate", "KEY_VALUES_MISMATCH"),
        ("no key file", "cannot read"),
    ],
)
def test_a_failed_reload_keeps_the_certificate_in_use(
    tls_proxy, listener_ca, tmp_path, damage, reason
):
    first = _presented_serial(tls_proxy)
    if damage == "garbage certificate":
        listener_ca.cert_file.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    elif damage == "key of another certificate":
        listener_ca.issue(listener_ca.cert_file, tmp_path / "other.key")
    else:
        listener_ca.key_file.unlink()
    _hang_up(tls_proxy)
    log = tls_proxy.wait_log(NOT_RELOADED)
    assert reason in log

    assert RELOADED not in log
    assert _presented_serial(tls_proxy) == first
    assert tls_proxy.pid is not None and tls_proxy._process is not None
    assert tls_proxy._process.poll() is None
    # Fixed files are picked up by the next SIGHUP.
    renewed = listener_ca.issue(listener_ca.cert_file, listener_ca.key_file)
    _hang_up(tls_proxy)
    tls_proxy.wait_log(RELOADED)
    assert _presented_serial(tls_proxy) == renewed


def test_workers_reload_when_their_parent_gets_sighup(upstream, seeded, listener_ca, tmp_path):
    config = proxy_config(tmp_path / "workers", {"test": upstream_entry(upstream.url)})
    with ProxyProcess(
        tmp_path / "workers", config, args=("--workers", "2"), listener_ca=listener_ca
    ) as proxy:
        renewed = listener_ca.issue(listener_ca.cert_file, listener_ca.key_file)
        # A worker still starting ignores SIGHUP (its loop handles it once it runs): ask
        # again until both workers said they reloaded.
        deadline = time.monotonic() + 60
        while not all(f"mirror-worker-{n} " in _reload_lines(proxy) for n in (0, 1)):
            assert time.monotonic() < deadline, proxy.log()[-3000:]
            _hang_up(proxy)
            time.sleep(0.5)
        assert {_presented_serial(proxy) for _ in range(20)} == {renewed}


def _reload_lines(proxy: ProxyProcess) -> str:
    return "\n".join(line for line in proxy.log().splitlines() if RELOADED in line)


def test_sighup_without_tls_leaves_the_server_running(proxy):
    _hang_up(proxy)
    proxy.wait_log("nothing to reload")
    assert proxy._process is not None and proxy._process.poll() is None

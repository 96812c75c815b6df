"""The load generators: a raw-socket HTTP/1.1 reader and curl for blob GETs, wrk for
manifest requests/s, and a plain GET for everything that is not timed."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.harness import GIB, MIB, BenchError
from benchmarks.proxy.cpu import CpuMeter, CpuUse
from tests.support.oci import OCI_MANIFEST
from tests.support.processes import LOOPBACK
from tests.support.tls import LoopbackCA

WRK = "/usr/bin/wrk"
CURL = "/usr/bin/curl"
USER_AGENT = "hpc-mirror-bench"
RECV_BUFFER = 4 * MIB


def http_get(
    port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """One untimed GET on the loopback port: status, headers (lower-case names), body."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": USER_AGENT, **(headers or {})})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def get_manifest(port: int, path: str, what: str) -> bytes:
    """An OCI manifest's body; raise unless the answer is 200."""
    status, _, body = http_get(port, path, {"Accept": OCI_MANIFEST}, timeout=30)
    if status != 200:
        raise BenchError(f"{what}: GET {path} answered {status}: {body[:300]!r}")
    return body


# --- blob downloads ----------------------------------------------------------------------


@dataclass
class Fetch:
    """One blob GET: what came back, how long it took, the CPU the servers used meanwhile."""

    status: int
    size: int
    seconds: float
    sha256: str | None = None
    error: str | None = None
    cpu: dict[str, CpuUse] = field(default_factory=dict)
    tls: str | None = None  # the protocol and cipher negotiated, over HTTPS

    @property
    def mib_s(self) -> float:
        return self.size / MIB / self.seconds if self.seconds > 0 else 0.0

    def cpu_text(self) -> str:
        """CPU seconds per GiB moved, per process, for a progress line."""
        gib = self.size / GIB or 1.0
        return ", ".join(f"{name} {sum(used) / gib:.2f}" for name, used in self.cpu.items())


def parse_head(header_block: bytes) -> tuple[int, dict[str, str]]:
    """Status and header fields (lower-case names) of an HTTP/1.1 response head."""
    lines = header_block.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.strip()
    return status, fields


def socket_get(
    port: int,
    path: str,
    *,
    hash_body: bool = False,
    headers: dict[str, str] | None = None,
    timeout: float = 120.0,
    write_to: int | None = None,
    ca: LoopbackCA | None = None,
) -> Fetch:
    """HTTP/1.1 GET over a raw socket (over TLS trusting `ca`, with `ca`); the body is read
    with recv_into a 4 MiB buffer and discarded (or hashed, and written to the file
    descriptor `write_to`). Time runs from connecting to the last body byte, so a TLS
    GET includes its handshake."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
        f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n"
    )
    for key, value in (headers or {}).items():
        request += f"{key}: {value}\r\n"
    request += "\r\n"
    digest = hashlib.sha256() if hash_body else None
    view = memoryview(bytearray(RECV_BUFFER))
    received = 0
    status = 0
    negotiated = None
    start = time.perf_counter()
    try:
        with _connect(port, timeout, ca) as sock:
            if isinstance(sock, ssl.SSLSocket):
                negotiated = f"{sock.version()} {sock.cipher()[0]}"  # type: ignore[index]
            sock.sendall(request.encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(65536)
                if not chunk:
                    raise BenchError("connection closed before the response headers")
                head += chunk
            header_block, _, rest = head.partition(b"\r\n\r\n")
            status, fields = parse_head(header_block)
            if "chunked" in fields.get("transfer-encoding", "").lower():
                raise BenchError("chunked response: this reader only handles Content-Length")
            length = int(fields["content-length"]) if "content-length" in fields else None
            received = len(rest)
            _consume(memoryview(rest), digest, write_to)
            while length is None or received < length:
                count = sock.recv_into(view)
                if count == 0:
                    break
                received += count
                _consume(view[:count], digest, write_to)
            elapsed = time.perf_counter() - start
            if length is not None and received != length:
                return Fetch(
                    status,
                    received,
                    elapsed,
                    None,
                    f"connection closed after {received} of {length} bytes",
                )
    except (OSError, BenchError, ValueError, KeyError, IndexError) as exc:
        return Fetch(
            status, received, time.perf_counter() - start, None, f"{type(exc).__name__}: {exc}"
        )
    return Fetch(status, received, elapsed, digest.hexdigest() if digest else None, tls=negotiated)


def _connect(port: int, timeout: float, ca: LoopbackCA | None) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    if ca is None:
        return sock
    return ca.client_context().wrap_socket(sock, server_hostname=LOOPBACK)


def _consume(piece: memoryview, digest: Any, write_to: int | None) -> None:
    if digest is not None:
        digest.update(piece)
    while write_to is not None and piece:
        piece = piece[os.write(write_to, piece) :]


def curl_get(
    port: int, path: str, *, timeout: float = 120.0, ca: LoopbackCA | None = None
) -> Fetch:
    """curl -o /dev/null (over HTTPS trusting `ca`, with `ca`); curl's own size and total
    time."""
    url = f"{'https' if ca else 'http'}://{LOOPBACK}:{port}{path}"
    try:
        result = subprocess.run(
            [
                CURL,
                *(["--cacert", str(ca.ca_file)] if ca else []),
                "-s",
                "-o",
                "/dev/null",
                "--max-time",
                str(int(timeout)),
                "-A",
                USER_AGENT,
                "-w",
                "%{http_code} %{size_download} %{time_total}",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=timeout + 10,
        )
    except subprocess.TimeoutExpired:
        return Fetch(0, 0, timeout, None, "curl timed out")
    parts = result.stdout.split()
    if result.returncode != 0 or len(parts) != 3:
        return Fetch(0, 0, 0.0, None, f"curl exited {result.returncode}: {result.stderr[:200]}")
    return Fetch(int(parts[0]), int(float(parts[1])), float(parts[2]))


def get_blob(
    client: str,
    port: int,
    path: str,
    expected_size: int,
    what: str,
    pids: dict[str, int | None] | None = None,
    ca: LoopbackCA | None = None,
) -> Fetch:
    """Download a blob with `client` (socket or curl; over HTTPS trusting `ca`, with `ca`),
    discarding it; raise unless it is a complete 200. With `pids`, record the CPU seconds
    those processes (and the client) used meanwhile."""
    with CpuMeter(pids or {}) as meter:
        fetch = (curl_get if client == "curl" else socket_get)(port, path, ca=ca)
    fetch.cpu = meter.used
    if fetch.error or fetch.status != 200 or fetch.size != expected_size:
        raise BenchError(
            f"{what}: GET {path} -> status {fetch.status}, {fetch.size} of "
            f"{expected_size} bytes, error {fetch.error}"
        )
    return fetch


# --- wrk -----------------------------------------------------------------------------------


@dataclass
class WrkResult:
    """What one wrk run reports, and its raw output."""

    requests_per_second: float
    requests: int
    non_2xx: int
    socket_errors: str
    latency_avg: str
    raw: str
    latency_ms: dict[str, float] = field(default_factory=dict)
    """Latency percentiles ("50%", "99%", ...) in ms, with `latency=True`."""

    @property
    def socket_error_count(self) -> int:
        """connect + read + write + timeout errors."""
        return sum(int(count) for count in re.findall(r"\d+", self.socket_errors))


_WRK_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def run_wrk(
    port: int,
    path: str,
    seconds: int,
    accept: str,
    *,
    connections: int = 32,
    latency: bool = False,
    timeout: int = 5,
) -> WrkResult:
    """`wrk -t2 -c<connections>` against one path for `seconds`, counting a response slower
    than `timeout` seconds as an error; with `latency`, also wrk's latency percentiles.
    wrk needs a soft RLIMIT_NOFILE above `connections`: it inherits this process's."""
    url = f"http://{LOOPBACK}:{port}{path}"
    command = [
        WRK,
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        f"{timeout}s",
        "-H",
        f"Accept: {accept}",
        *(["--latency"] if latency else []),
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    out = result.stdout
    if result.returncode != 0:
        raise BenchError(f"wrk exited {result.returncode}: {result.stderr}{out}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:([^\n]*)", out)
    average = re.search(r"Latency\s+(\S+)", out)
    if not rps or not total:
        raise BenchError(f"cannot parse wrk output:\n{out}")
    percentiles = re.findall(r"^\s+(\d+%)\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.MULTILINE)
    return WrkResult(
        float(rps.group(1)),
        int(total.group(1)),
        int(non2xx.group(1)) if non2xx else 0,
        errors.group(1).strip() if errors else "",
        average.group(1) if average else "?",
        out,
        {name: float(value) * _WRK_TIME_UNITS_MS[unit] for name, value, unit in percentiles},
    )

"""Many blob GETs at once from one thread: non-blocking raw sockets in one selector loop,
bodies read with recv_into one shared buffer and discarded (the first few hashed), so on
two cores the time goes to the servers and not to the load generator."""

from __future__ import annotations

import errno
import hashlib
import selectors
import socket
import statistics
import time
from dataclasses import dataclass, field

from benchmarks.harness import MIB
from benchmarks.proxy.clients import USER_AGENT, parse_head
from tests.support.processes import LOOPBACK

RECV_BUFFER = MIB
"""Shared by every connection: the bytes are discarded, so they may overwrite each other."""


@dataclass
class Stream:
    """One GET among many: what came back, and when (seconds since the run started)."""

    index: int
    status: int = 0
    length: int | None = None
    received: int = 0
    first_byte: float | None = None
    finished: float | None = None
    hung_up: bool = False
    sha256: str | None = None
    error: str | None = None

    @property
    def mib_s(self) -> float | None:
        if self.finished is None or self.finished <= 0:
            return None
        return self.received / MIB / self.finished


@dataclass
class StreamRun:
    """Every stream of one run and its wall time (first connect to last byte)."""

    streams: list[Stream]
    wall: float
    hung: int = 0  # streams still open at the deadline

    @property
    def received(self) -> int:
        return sum(s.received for s in self.streams)

    @property
    def aggregate_mib_s(self) -> float:
        return self.received / MIB / self.wall if self.wall > 0 else 0.0

    def median_mib_s(self) -> float | None:
        speeds = [speed for s in self.streams if not s.error and (speed := s.mib_s)]
        return statistics.median(speeds) if speeds else None

    def min_mib_s(self) -> float | None:
        speeds = [speed for s in self.streams if not s.error and (speed := s.mib_s)]
        return min(speeds) if speeds else None

    def failures(self, size: int, sha256_hex: str, hang_up_after: int | None = None) -> list[str]:
        """One line per stream that failed: an error, a short body, a wrong sha256, or (with
        `hang_up_after`) a hang-up before that many bytes came."""
        lines = []
        for s in self.streams:
            if s.error:
                lines.append(f"stream {s.index}: {s.error}")
            elif hang_up_after is not None:
                if s.received < min(hang_up_after, size):
                    lines.append(f"stream {s.index}: only {s.received} bytes")
            elif s.received != size:
                lines.append(f"stream {s.index}: {s.received} of {size} bytes")
            elif s.sha256 is not None and s.sha256 != sha256_hex:
                lines.append(f"stream {s.index}: sha256 {s.sha256} != {sha256_hex}")
        return lines


@dataclass
class _Connection:
    stream: Stream
    sock: socket.socket
    hasher: hashlib._Hash | None
    head: bytearray | None = field(default_factory=bytearray)  # None once headers are read


def run_streams(
    port: int,
    path: str,
    count: int,
    *,
    hang_up_after: int | None = None,
    verify: int = 0,
    timeout: float = 120.0,
) -> StreamRun:
    """Open `count` connections at once, GET `path` on each and read the body to its end,
    or close the socket once `hang_up_after` body bytes came (unread data makes the kernel
    send a RST, as when a client is killed). The first `verify` bodies are hashed. Streams
    still open after `timeout` seconds are closed and counted as errors."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nUser-Agent: {USER_AGENT}\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode()
    view = memoryview(bytearray(RECV_BUFFER))
    selector = selectors.DefaultSelector()
    streams = [Stream(index) for index in range(count)]
    started = time.perf_counter()
    try:
        for stream in streams:
            _connect(selector, stream, port, hashlib.sha256() if stream.index < verify else None)
        deadline = started + timeout
        while selector.get_map() and (left := deadline - time.perf_counter()) > 0:
            for key, events in selector.select(timeout=min(left, 1.0)):
                connection: _Connection = key.data
                now = time.perf_counter() - started
                try:
                    if events & selectors.EVENT_WRITE:
                        done = _send_request(selector, connection, request)
                    else:
                        done = _receive(connection, view, now, hang_up_after)
                except OSError as exc:
                    connection.stream.error = f"{type(exc).__name__}: {exc}"
                    done = True
                if done:
                    selector.unregister(connection.sock)
                    connection.sock.close()
        wall = time.perf_counter() - started
        hung = len(selector.get_map())
        for key in list(selector.get_map().values()):
            key.data.stream.error = f"still open after {timeout:.0f} s"
    finally:
        for key in list(selector.get_map().values()):
            selector.unregister(key.fileobj)
            key.data.sock.close()
        selector.close()
    return StreamRun(streams, wall, hung)


def _connect(
    selector: selectors.BaseSelector, stream: Stream, port: int, hasher: hashlib._Hash | None
) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    code = sock.connect_ex((LOOPBACK, port))
    if code not in (0, errno.EINPROGRESS):
        stream.error = f"connect: {errno.errorcode.get(code, code)}"
        sock.close()
        return
    selector.register(sock, selectors.EVENT_WRITE, _Connection(stream, sock, hasher))


def _send_request(
    selector: selectors.BaseSelector, connection: _Connection, request: bytes
) -> bool:
    """Send the request once the connection is up; True when the stream ended instead."""
    code = connection.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        connection.stream.error = f"connect: {errno.errorcode.get(code, code)}"
        return True
    connection.sock.sendall(request)  # a few hundred bytes: fits an empty send buffer
    selector.modify(connection.sock, selectors.EVENT_READ, connection)
    return False


def _receive(
    connection: _Connection, view: memoryview, now: float, hang_up_after: int | None
) -> bool:
    """Read what arrived; True when the stream is complete, hung up or failed."""
    stream = connection.stream
    if connection.head is not None:
        chunk = connection.sock.recv(65536)
        if not chunk:
            stream.error = "closed before the response headers"
            return True
        connection.head += chunk
        header_block, found, rest = bytes(connection.head).partition(b"\r\n\r\n")
        if not found:
            return False
        connection.head = None
        stream.first_byte = now
        stream.status, fields = parse_head(header_block)
        if stream.status != 200 or "content-length" not in fields:
            stream.error = f"status {stream.status}, Content-Length {fields.get('content-length')}"
            return True
        stream.length = int(fields["content-length"])
        _take(connection, rest)
    else:
        count = connection.sock.recv_into(view)
        if count == 0:
            stream.error = f"closed after {stream.received} of {stream.length} bytes"
            return True
        _take(connection, view[:count])
    if stream.length is not None and stream.received >= stream.length:
        stream.finished = now
        if connection.hasher is not None:
            stream.sha256 = connection.hasher.hexdigest()
        return True
    if hang_up_after is not None and stream.received >= hang_up_after:
        stream.finished, stream.hung_up = now, True
        return True
    return False


def _take(connection: _Connection, data: bytes | memoryview) -> None:
    connection.stream.received += len(data)
    if connection.hasher is not None:
        connection.hasher.update(data)

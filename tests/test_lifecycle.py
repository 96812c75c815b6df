"""`mirror serve` stopping and reloading as a service manager drives it: SIGTERM lets the
downloads in flight finish (up to `server.shutdown_grace_seconds`) while new connections
are refused, then exits 0; a download longer than the grace is cut at the grace; with
`--workers` the parent passes SIGTERM on and waits."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support import oci
from tests.support.processes import LOOPBACK
from tests.support.proxy import ProxyProcess
from tests.support.registry import RegistryProcess
from tests.support.seed import RegistryClient, Seeded

DRAIN_BLOB_SIZE = 256 * 1024 * 1024
DRAIN_REPO = "drain/blob"
STOPPING = "stopping: no new connections"


@pytest.fixture(scope="module")
def drain_blob(upstream: RegistryProcess) -> oci.DeterministicBlob:
    """A 256 MiB blob in the session's upstream (content-addressed: pushing it again is a
    no-op), regenerated from its seed to check what a client received."""
    blob = oci.DeterministicBlob(DRAIN_REPO, DRAIN_BLOB_SIZE)
    client = RegistryClient(upstream.url)
    try:
        client.push_blob(DRAIN_REPO, blob)
    finally:
        client.close()
    return blob


class SlowDownload:
    """A client reading a blob through the mirror at its own pace, in a thread."""

    def __init__(self, url: str, pause: float, chunk: int = 1 << 20) -> None:
        self.received = 0
        self.digest = hashlib.sha256()
        self.error: Exception | None = None
        self.status = 0
        self.stalled = False  # set True to stop reading (the connection stays open)
        self._url, self._pause, self._chunk = url, pause, chunk
        self._pool = ThreadPoolExecutor(1)
        self._result = self._pool.submit(self._run)

    def _run(self) -> None:
        try:
            with requests.get(self._url, stream=True, timeout=120) as response:
                self.status = response.status_code
                for piece in response.iter_content(self._chunk):
                    self.digest.update(piece)
                    self.received += len(piece)
                    while self.stalled:
                        time.sleep(0.05)
                    time.sleep(self._pause)
        except requests.RequestException as exc:
            self.error = exc

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        _wait(lambda: self.received >= count or self._result.done(), timeout, "download")
        assert self.received >= count, f"download ended at {self.received}: {self.error!r}"

    def result(self, timeout: float = 300.0) -> tuple[int, str, int, Exception | None]:
        self._result.result(timeout)
        self._pool.shutdown()
        return self.status, "sha256:" + self.digest.hexdigest(), self.received, self.error


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _terminate(proxy: ProxyProcess) -> None:
    assert proxy.pid is not None
    os.kill(proxy.pid, signal.SIGTERM)


def _exit_code(proxy: ProxyProcess, timeout: float) -> int:
    assert proxy._process is not None
    return proxy._process.wait(timeout=timeout)


def _refused(proxy: ProxyProcess) -> bool:
    try:
        socket.create_connection((LOOPBACK, proxy.port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_lets_a_256_mib_download_finish_and_refuses_new_connections(
    make_proxy, upstream, drain_blob
):
    proxy = make_proxy(
        {"test": upstream_entry(upstream.url)}, server={"shutdown_grace_seconds": 120}
    )
    url = f"{proxy.url}/v2/{UPSTREAM_PREFIX}/{DRAIN_REPO}/blobs/{drain_blob.digest}"
    # 4 MiB at least every 50 ms: the rest takes more than 3 s after the SIGTERM
    download = SlowDownload(url, pause=0.05, chunk=4 << 20)
    download.wait_for(16 << 20)
    _terminate(proxy)
    proxy.wait_log(STOPPING, timeout=30)
    assert _refused(proxy)
    assert download.received < DRAIN_BLOB_SIZE  # still in flight while refusing
    status, digest, size, error = download.result()
    assert (status, size, error) == (200, DRAIN_BLOB_SIZE, None)
    assert digest == drain_blob.digest
    assert _exit_code(proxy, timeout=60) == 0
    log = proxy.log()
    assert "1 responses in flight, waiting up to 120 s for them" in log
    assert "every response in flight finished" in log
    assert "Traceback" not in log


def test_a_download_longer_than_the_grace_is_cut_at_the_grace(make_proxy, upstream, seeded: Seeded):
    proxy = make_proxy({"test": upstream_entry(upstream.url)}, server={"shutdown_grace_seconds": 1})
    blob = seeded.big_blob
    url = f"{proxy.url}/v2/{UPSTREAM_PREFIX}/big/blob/blobs/{blob.digest}"
    download = SlowDownload(url, pause=0)
    download.wait_for(1 << 20)
    download.stalled = True  # the server's socket buffers fill; its send waits
    _terminate(proxy)
    assert _exit_code(proxy, timeout=60) == 0
    download.stalled = False
    status, _, size, error = download.result()
    assert status == 200 and size < blob.size and error is not None
    log = proxy.log()
    assert "cutting the 1 responses still running after 1 s" in log
    # the cut response is in the access log, with what it sent until then
    [line] = [line for line in log.splitlines() if f"/blobs/{blob.digest}" in line]
    sent = int(line.split('" ')[1].split()[1])
    assert 0 < sent < blob.size and '" 200 ' in line


def test_workers_stop_together_when_their_parent_gets_sigterm(make_proxy, upstream, seeded):
    proxy = make_proxy({"test": upstream_entry(upstream.url)}, args=("--workers", "2"))
    blob = seeded.big_blob
    url = f"{proxy.url}/v2/{UPSTREAM_PREFIX}/big/blob/blobs/{blob.digest}"
    download = SlowDownload(url, pause=0.05)  # 64 MiB: at least 3 s
    download.wait_for(8 << 20)
    children = _children(proxy.pid)  # the two workers and multiprocessing's resource tracker
    assert len(children) == 3
    _terminate(proxy)
    status, digest, size, error = download.result()
    assert (status, digest, size, error) == (200, blob.digest, blob.size, None)
    assert _exit_code(proxy, timeout=60) == 0
    _wait(lambda: not any(map(_running, children)), 30, "the workers to exit")
    assert proxy.log().count(STOPPING) == 2


def _running(pid: int) -> bool:
    """Whether `pid` is alive (a zombie, exited but not reaped by its new parent, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int | None) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(child) for child in children.read().split()]


def test_a_second_sigterm_cuts_the_drain_at_once(make_proxy, upstream, seeded: Seeded):
    """An operator who cannot wait out the grace sends SIGTERM (or Ctrl-C) again; the same
    signal delivered twice at once (to `--workers` directly and through their parent)
    does not count as a second one."""
    proxy = make_proxy(
        {"test": upstream_entry(upstream.url)}, server={"shutdown_grace_seconds": 600}
    )
    blob = seeded.big_blob
    url = f"{proxy.url}/v2/{UPSTREAM_PREFIX}/big/blob/blobs/{blob.digest}"
    download = SlowDownload(url, pause=0)
    download.wait_for(1 << 20)
    download.stalled = True  # the response cannot finish while the client does not read
    _terminate(proxy)
    _terminate(proxy)  # the same signal twice at once: still draining
    proxy.wait_log(STOPPING, timeout=30)
    time.sleep(1.5)
    assert proxy._process is not None and proxy._process.poll() is None
    _terminate(proxy)
    assert _exit_code(proxy, timeout=60) == 0  # far inside the 600 s grace
    download.stalled = False
    status, _, size, error = download.result()
    assert status == 200 and size < blob.size and error is not None
    log = proxy.log()
    assert "a second signal: cutting the 1 responses still running now" in log
    assert "Traceback" not in log

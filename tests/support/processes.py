"""Server child processes for the tests and the benchmarks: each one listens on a free
loopback port, is probed until it answers, and is stopped by its own PID.

The benchmarks import this module, as they import the registry peer built on it: tests/support
is the harness of real peers, benchmarks/ reuses them, and nothing here imports benchmarks/,
so the dependency runs one way and each helper exists once.
"""

from __future__ import annotations

import atexit
import http.client
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar, Self

LOOPBACK = "127.0.0.1"

#: User-Agent of the readiness probe, so a server's request log can leave its probes out.
PROBE_USER_AGENT = "hpc-mirror-tests-readiness-probe"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM this one process, SIGKILL it if it is still there after `timeout` seconds,
    and reap it. Only the given child is signalled; one that already exited is just reaped."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def spawn_logged(
    command: list[str], log_path: Path, stderr_path: Path | None = None, **popen: Any
) -> subprocess.Popen[bytes]:
    """Start `command` with stdin closed, appending its stdout to `log_path` and its stderr
    to `stderr_path` (or to `log_path` as well). Append: a restart continues the same log."""
    with open(log_path, "ab") as out:
        if stderr_path is None:
            return subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **popen
            )
        with open(stderr_path, "ab") as err:
            return subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, **popen
            )


def probe_status(
    port: int, path: str, timeout: float = 1.0, tls: ssl.SSLContext | None = None
) -> int | None:
    """Status of `GET path` on the loopback port (over TLS with `tls`), or None when nothing
    answers."""
    conn = (
        http.client.HTTPSConnection(LOOPBACK, port, timeout=timeout, context=tls)
        if tls is not None
        else http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    )
    try:
        conn.request("GET", path, headers={"User-Agent": PROBE_USER_AGENT})
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class StartError(RuntimeError):
    """A server process died or did not answer its readiness probe in time."""


_running: set[subprocess.Popen[bytes]] = set()
"""Server processes not stopped yet; stopped at interpreter exit if a caller forgot."""


@atexit.register
def _stop_leftovers() -> None:
    for process in list(_running):
        stop_process(process)


class LoopbackServer:
    """Anything listening on a loopback port, with its address in the forms clients use."""

    port: int
    tls: ssl.SSLContext | None = None  # set by a server that answers HTTPS: trusts its CA

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as used in image references."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` for a TLS server; no trailing slash)."""
        return f"{'https' if self.tls else 'http'}://{self.host}"


class ServerProcess(LoopbackServer):
    """One server child process on a loopback port.

    A subclass sets `port`, writes its configuration and starts the process in `_spawn`,
    and says in `_failure_log` what the process wrote. The first start retries on a new
    port when another process took the chosen one; a restart keeps the port, because
    clients (a proxy's config, say) hold the address.
    """

    name: ClassVar[str] = "server"
    ready_path: ClassVar[str] = "/v2/"
    ready_statuses: ClassVar[tuple[int, ...]] = (200,)
    start_error: ClassVar[type[StartError]] = StartError

    def __init__(self, start_timeout: float = 10.0) -> None:
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._started_once = False

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Write the configuration for `self.port` and start the process."""
        raise NotImplementedError

    def _failure_log(self) -> str:
        """What the process wrote, for the error raised when it does not come up."""
        raise NotImplementedError

    def _choose_ports(self) -> None:
        """Pick new free ports after another process took one (a server with several
        listeners picks them all)."""
        self.port = free_port()

    def _answers(self) -> bool:
        """The server is ready: by default `ready_path` answers one of `ready_statuses`."""
        return probe_status(self.port, self.ready_path, tls=self.tls) in self.ready_statuses

    @property
    def pid(self) -> int | None:
        """PID of the running process, or ``None`` when stopped."""
        return self._process.pid if self._process else None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> Self:
        """Start the process and wait until `ready_path` answers one of `ready_statuses`."""
        if self._process is not None:
            raise RuntimeError(f"{self.name} already running")
        attempts = 1 if self._started_once else 3
        for attempt in range(1, attempts + 1):
            try:
                self._start_and_wait()
                break
            except StartError:
                port_taken = "address already in use" in self._failure_log().lower()
                if attempt < attempts and port_taken:
                    self._choose_ports()
                    continue
                raise
        self._started_once = True
        return self

    def _start_and_wait(self) -> None:
        self._process = process = self._spawn()
        _running.add(process)
        try:
            self._wait_ready(process)
        except StartError:
            self.stop()
            raise

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise self.start_error(
                    f"{self.name} exited with {process.returncode}:\n" + self._failure_log()
                )
            if self._answers():
                return
            time.sleep(0.05)
        raise self.start_error(
            f"{self.name} did not answer on {self.url} within "
            f"{self.start_timeout} s:\n" + self._failure_log()
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and reap it. Idempotent."""
        process, self._process = self._process, None
        if process is not None:
            _running.discard(process)
            stop_process(process, timeout)

    def restart(self) -> Self:
        """Stop and start again on the same port."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

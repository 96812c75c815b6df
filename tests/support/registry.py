"""Run Debian's ``docker-registry`` (CNCF distribution 2.8) as a real upstream for tests.

Each :class:`RegistryProcess` owns a private temp directory holding its config file,
filesystem storage and log files, and listens on a free 127.0.0.1 port. Tests use it as
the upstream of the proxy under test (no mocks) and assert on its **access log** how many
requests actually reached it.

Access log: with ``log.accesslog.disabled: false`` distribution wraps its whole HTTP
handler in a combined-format logger that prints one line per request to *stdout*, e.g.::

    127.0.0.1 - - [27/Nov/2026:00:01:13 +0000] "GET /v2/ HTTP/1.1" 401 87 "" "curl/7.88.1"

That line is written for every request, including 401s and unknown routes. The structured
``msg="response completed"`` lines on stderr are *not* a complete record (distribution 2.8
prints none for requests rejected by auth or by the router), so they are not used here.
The line is written just after the response has been sent, so a client can see the
response before the line exists; :meth:`RegistryProcess.requests` therefore waits until the
log has stopped growing before reading it.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union, cast

from .processes import (
    PROBE_USER_AGENT,
    ServerProcess,
    StartError,
    free_port,
    spawn_logged,
)

if TYPE_CHECKING:
    from .tls import LoopbackCA
    from .token_issuer import TokenSettings

REGISTRY_BINARY = "/usr/bin/docker-registry"

AuthSpec = Union[
    None,
    tuple[Literal["htpasswd"], Union[str, Path]],
    tuple[Literal["token"], "TokenSettings"],
]


def write_htpasswd(path: str | Path, username: str, password: str) -> Path:
    """Write an htpasswd file with one bcrypt entry (distribution accepts only bcrypt)."""
    entry = subprocess.run(
        ["htpasswd", "-Bbn", username, password], check=True, capture_output=True, text=True
    ).stdout.strip()
    path = Path(path)
    path.write_text(entry + "\n")
    return path


@dataclass(frozen=True)
class LoggedRequest:
    """One line of the registry's access log."""

    method: str
    path: str
    query: str
    status: int
    size: int
    user_agent: str


# host ident user [time] "METHOD URI PROTO" status size "referer" "user-agent"
_ACCESS_LINE = re.compile(
    r'^\S+ \S+ \S+ \[[^\]]*\] "(?P<method>\S+) (?P<uri>\S+) [^"]*" '
    r'(?P<status>\d{3}) (?P<size>\d+|-) "[^"]*" "(?P<ua>[^"]*)"'
)


def parse_access_line(line: str) -> LoggedRequest | None:
    """Parse one combined-format access-log line; ``None`` for any other line."""
    match = _ACCESS_LINE.match(line)
    if match is None:
        return None
    path, _, query = match["uri"].partition("?")
    size = match["size"]
    return LoggedRequest(
        method=match["method"],
        path=path,
        query=query,
        status=int(match["status"]),
        size=0 if size == "-" else int(size),
        user_agent=match["ua"],
    )


class RegistryStartError(StartError):
    """The registry process died or did not answer ``/v2/`` in time."""


class RegistryProcess(ServerProcess):
    """A ``docker-registry serve`` child process on 127.0.0.1 with private storage.

    ``auth`` is ``None`` (anonymous), ``("htpasswd", path)`` (Basic; the file must hold
    bcrypt hashes, e.g. from ``htpasswd -B``) or ``("token", TokenSettings)`` (Bearer,
    see :mod:`tests.support.token_issuer`). ``proxy_remote_url`` turns the registry into
    distribution's own pull-through cache (used by the benchmarks as a baseline).

    ``workdir``: where config, storage and logs go; a fresh temp directory (removed by
    :meth:`close`) when not given. ``tls``: serve HTTPS with that CA's server certificate.
    """

    name = "docker-registry"
    ready_statuses = (200, 401)
    start_error = RegistryStartError

    def __init__(
        self,
        *,
        auth: AuthSpec = None,
        proxy_remote_url: str | None = None,
        proxy_credentials: tuple[str, str] | None = None,
        log_level: str = "info",
        workdir: str | Path | None = None,
        start_timeout: float = 10.0,
        tls: LoopbackCA | None = None,
    ) -> None:
        super().__init__(start_timeout)
        self.certificate = tls
        self.tls = tls.client_context() if tls else None
        self.auth = auth
        self.proxy_remote_url = proxy_remote_url
        self.proxy_credentials = proxy_credentials
        self.log_level = log_level
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="hpc-mirror-registry-"))
        self.storage_dir = self.workdir / "storage"
        self.config_path = self.workdir / "config.yml"
        self.access_log_path = self.workdir / "stdout.log"
        self.stderr_path = self.workdir / "stderr.log"
        self.port = free_port()
        self._secret = secrets.token_hex(16)
        self._stderr_start = 0  # size of stderr.log when the current process started

    # --- configuration --------------------------------------------------------------------

    def config(self) -> dict:
        """The registry configuration as a dict.

        It is written as JSON, which is valid YAML, so no YAML library is needed.
        """
        cfg: dict = {
            "version": "0.1",
            "log": {
                "level": self.log_level,
                "formatter": "text",
                "accesslog": {"disabled": False},
            },
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": self._secret},
        }
        if self.certificate is not None:
            cfg["http"]["tls"] = {
                "certificate": str(self.certificate.cert_file),
                "key": str(self.certificate.key_file),
            }
        auth = self._auth_config()
        if auth:
            cfg["auth"] = auth
        if self.proxy_remote_url:
            proxy = {"remoteurl": self.proxy_remote_url}
            if self.proxy_credentials:
                proxy["username"], proxy["password"] = self.proxy_credentials
            cfg["proxy"] = proxy
        return cfg

    def _auth_config(self) -> dict | None:
        if self.auth is None:
            return None
        kind, value = self.auth
        if kind == "htpasswd":
            return {"htpasswd": {"realm": "hpc-mirror-tests", "path": str(value)}}
        if kind == "token":
            settings = cast("TokenSettings", value)
            return {
                "token": {
                    "realm": settings.realm,
                    "service": settings.service,
                    "issuer": settings.issuer,
                    "rootcertbundle": str(settings.rootcertbundle),
                }
            }
        raise ValueError(f"unknown auth kind {kind!r}")

    # --- lifecycle ------------------------------------------------------------------------

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        # Logs are appended across restarts, so marks stay valid; remember where this
        # process's stderr starts.
        self._stderr_start = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
        return spawn_logged(
            [REGISTRY_BINARY, "serve", str(self.config_path)],
            self.access_log_path,
            self.stderr_path,
            cwd=self.workdir,
        )

    def close(self) -> None:
        """Stop the process and remove the temp directory if this object created it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- logs -----------------------------------------------------------------------------

    def stderr_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the registry's stderr (its structured log)."""
        try:
            text = self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _failure_log(self) -> str:
        """This process's fatal/panic lines first (a Go panic trace buries them), then
        the tail of its stderr."""
        with open(self.stderr_path, "rb") as err:
            err.seek(self._stderr_start)
            lines = err.read().decode(errors="replace").splitlines()
        fatal = [l for l in lines if l.startswith("panic:") or "level=fatal" in l]
        return "\n".join(fatal + ["--- stderr tail ---"] + lines[-15:])

    def wait_quiet(self, quiet: float = 0.1, timeout: float = 3.0) -> None:
        """Wait until the access log has not grown for ``quiet`` seconds.

        distribution writes a request's access-log line only after the response went out,
        so a test that just received a response must give the line time to appear.
        """
        deadline = time.monotonic() + timeout
        last_size = -1
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            size = self._access_log_size()
            now = time.monotonic()
            if size != last_size:
                last_size, stable_since = size, now
            elif now - stable_since >= quiet:
                return
            time.sleep(0.02)

    def _access_log_size(self) -> int:
        try:
            return self.access_log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def requests(self, *, settle: bool = True) -> list[LoggedRequest]:
        """Every request the registry logged, oldest first, without readiness probes.

        ``settle`` first waits for the log to go quiet (see :meth:`wait_quiet`).
        """
        if settle:
            self.wait_quiet()
        try:
            text = self.access_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        parsed = (parse_access_line(line) for line in text.splitlines())
        return [r for r in parsed if r is not None and r.user_agent != PROBE_USER_AGENT]

    def mark(self) -> int:
        """A position in the request log; pass it as ``since`` to count later requests."""
        return len(self.requests())

    def count(
        self,
        method: str | None = None,
        path_contains: str | None = None,
        since: int | None = None,
        status: int | None = None,
    ) -> int:
        """Count logged requests matching all the given filters.

        ``since`` is a value from :meth:`mark`; only requests logged after it count.
        """
        return sum(
            1
            for r in self.requests()[since or 0 :]
            if (method is None or r.method == method)
            and (path_contains is None or path_contains in r.path)
            and (status is None or r.status == status)
        )

"""HAProxy terminating TLS in front of several `mirror serve` instances, configured as the
README's "Behind HAProxy" section shows it; in the foreground, stopped by its PID."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .processes import LOOPBACK, ServerProcess, free_port, spawn_logged
from .tls import LoopbackCA

HAPROXY = "/usr/sbin/haproxy"


class HAProxyProcess(ServerProcess):
    """`haproxy -db -f <workdir>/haproxy.cfg`: HTTPS on a free loopback port with `ca`'s
    server certificate, `balance leastconn` over `backends` (host:port, plain HTTP)."""

    name = "haproxy"

    def __init__(self, workdir: Path, ca: LoopbackCA, backends: list[str]) -> None:
        super().__init__(start_timeout=20.0)
        self.workdir = workdir
        self.ca = ca
        self.backends = backends
        self.port = free_port()
        self.tls = ca.client_context()
        self.log_path = workdir / "haproxy.log"

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        pem = self.workdir / "mirror.pem"  # HAProxy wants the chain and the key in one file
        pem.write_bytes(self.ca.cert_file.read_bytes() + self.ca.key_file.read_bytes())
        pem.chmod(0o600)
        servers = "\n".join(
            f"    server node{n} {backend} check" for n, backend in enumerate(self.backends, 1)
        )
        config = self.workdir / "haproxy.cfg"
        config.write_text(
            f"""global
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 5m
    timeout server 5m

frontend mirror
    bind {LOOPBACK}:{self.port} ssl crt {pem} alpn http/1.1 ssl-min-ver TLSv1.2
    default_backend mirrors

backend mirrors
    balance leastconn
    option httpchk GET /v2/
{servers}
"""
        )
        return spawn_logged([HAPROXY, "-db", "-f", str(config)], self.log_path)

    def _failure_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

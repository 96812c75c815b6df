"""HAProxy running contrib/haproxy.cfg on loopback in front of `mirror serve` instances:
a copy of the file with the frontend on a free port and one server line per instance, every
other line as shipped. In the foreground, stopped by its PID."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from .processes import LOOPBACK, ServerProcess, free_port, spawn_logged
from .tls import LoopbackCA

HAPROXY = "/usr/sbin/haproxy"
CONTRIB_CONFIG = Path(__file__).parents[2] / "contrib" / "haproxy.cfg"


def contrib_config(
    port: int, backends: list[str], tls_pem: Path | None = None, balance: str | None = None
) -> str:
    """contrib/haproxy.cfg on 127.0.0.1:`port` (with `tls_pem`: its commented TLS bind, with
    that certificate, in place of the plain one), its servers `node1 <backends[0]>` ...;
    its health check (`GET /readyz`) as shipped; `balance` in place of its algorithm."""
    text = CONTRIB_CONFIG.read_text()
    if balance is not None:
        text, count = re.subn(r"(?m)^([ \t]+)balance \S+$", rf"\g<1>balance {balance}", text)
        assert count == 1, "contrib/haproxy.cfg has no single balance line"
    plain = re.compile(r"(?m)^([ \t]+)bind :\d+\n")
    tls = re.compile(r"(?m)^([ \t]+)# bind :\d+ ssl crt \S+ (.*)$")
    servers = re.findall(r"(?m)^[ \t]+server .*\n", text)
    assert all(len(p.findall(text)) == 1 for p in (plain, tls)) and servers, (
        "contrib/haproxy.cfg changed its shape: update tests/support/haproxy.py"
    )
    if tls_pem is None:
        text = plain.sub(rf"\g<1>bind {LOOPBACK}:{port}\n", text)
    else:
        text = tls.sub(rf"\g<1>bind {LOOPBACK}:{port} ssl crt {tls_pem} \g<2>", plain.sub("", text))
    indent = servers[0][: len(servers[0]) - len(servers[0].lstrip())]
    ours = "".join(f"{indent}server node{n} {b}\n" for n, b in enumerate(backends, 1))
    return text.replace(servers[0], ours).replace("".join(servers[1:]), "", 1)


class HAProxyProcess(ServerProcess):
    """`haproxy -db -f <workdir>/haproxy.cfg`, contrib/haproxy.cfg sending to `backends`
    (host:port, plain HTTP); with `ca`, terminating TLS with that CA's server certificate.
    `log()` is what HAProxy wrote, e.g. a server going DOWN. `balance`: another algorithm
    than the shipped one (e.g. "roundrobin", to send each request elsewhere)."""

    name = "haproxy"

    def __init__(
        self,
        workdir: Path,
        backends: list[str],
        ca: LoopbackCA | None = None,
        balance: str | None = None,
    ) -> None:
        super().__init__(start_timeout=20.0)
        self.balance = balance
        self.workdir = workdir
        self.backends = backends
        self.ca = ca
        self.port = free_port()
        self.tls = ca.client_context() if ca else None
        self.config_path = workdir / "haproxy.cfg"
        self.log_path = workdir / "haproxy.log"

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        pem = None
        if self.ca is not None:
            pem = self.workdir / "mirror.pem"  # HAProxy wants the chain and the key in one file
            pem.write_bytes(self.ca.cert_file.read_bytes() + self.ca.key_file.read_bytes())
            pem.chmod(0o600)
        self.config_path.write_text(contrib_config(self.port, self.backends, pem, self.balance))
        return spawn_logged([HAPROXY, "-db", "-f", str(self.config_path)], self.log_path)

    def _failure_log(self) -> str:
        return self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 60.0) -> None:
        """Until HAProxy has written `text`."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in HAProxy's log:\n{self.log()[-3000:]}")
            time.sleep(0.1)

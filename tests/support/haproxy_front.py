"""HAProxy running contrib/haproxy.cfg on loopback in front of `mirror serve` instances:
a copy of the file with the frontend on a free port and one server line per instance, every
other line as shipped. In the foreground, stopped by its PID."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from .processes import LOOPBACK, ServerProcess, free_port, spawn_logged

HAPROXY = "/usr/sbin/haproxy"
CONTRIB_CONFIG = Path(__file__).parents[2] / "contrib" / "haproxy.cfg"


def contrib_config(port: int, backends: list[str], check_path: str) -> str:
    """contrib/haproxy.cfg bound to 127.0.0.1:`port`, its server lines replaced by
    `node1 <backend1>`, `node2 <backend2>` ..., its health check asking `check_path`."""
    text = CONTRIB_CONFIG.read_text()
    text, binds = re.subn(r"(?m)^(\s+)bind :\d+$", rf"\g<1>bind {LOOPBACK}:{port}", text)
    text, checks = re.subn(r"(?m)^(\s+option httpchk GET )/readyz$", rf"\g<1>{check_path}", text)
    servers = [line for line in text.splitlines() if re.match(r"\s+server ", line)]
    assert (binds, checks) == (1, 1) and servers, "contrib/haproxy.cfg changed its shape"
    indent = servers[0][: len(servers[0]) - len(servers[0].lstrip())]
    ours = "\n".join(f"{indent}server node{n} {b}" for n, b in enumerate(backends, 1))
    text = text.replace(servers[0], ours)
    for line in servers[1:]:
        text = text.replace(line + "\n", "")
    return text


class HAProxyFront(ServerProcess):
    """`haproxy -db -f <workdir>/haproxy.cfg`, the contrib config made to send to
    `backends` (host:port). `log()` is what HAProxy wrote, e.g. a server going DOWN."""

    name = "haproxy"

    def __init__(self, workdir: Path, backends: list[str], check_path: str) -> None:
        super().__init__(start_timeout=20.0)
        self.workdir = workdir
        self.backends = backends
        self.check_path = check_path
        self.config_path = workdir / "haproxy.cfg"
        self.log_path = workdir / "haproxy.log"
        self.port = free_port()

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(contrib_config(self.port, self.backends, self.check_path))
        return self.config_path

    def _spawn(self) -> subprocess.Popen[bytes]:
        return spawn_logged([HAPROXY, "-db", "-f", str(self.write_config())], self.log_path)

    def _failure_log(self) -> str:
        return self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, after: int = 0, timeout: float = 60.0) -> None:
        """Until HAProxy wrote `text` past offset `after` of its log."""
        deadline = time.monotonic() + timeout
        while text not in self.log()[after:]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in HAProxy's log:\n{self.log()[-3000:]}")
            time.sleep(0.1)

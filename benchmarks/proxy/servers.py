"""The servers a run starts, all on 127.0.0.1 and each stopped by its own PID: the
upstream registry, distribution's pull-through cache as the baseline, hpc-mirror itself,
and nginx serving the proxy's cache directory as the ceiling for a warm blob GET."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.processes import LOOPBACK, ServerProcess, free_port, spawn_logged
from tests.support.proxy import ProxyProcess, proxy_config, upstream_entry
from tests.support.registry import REGISTRY_BINARY, RegistryProcess
from tests.support.tls import LoopbackCA

NGINX = "/usr/sbin/nginx"
PREFIX = "bench.local"
"""The upstream prefix of the proxy under test: it serves the upstream at /v2/bench.local/."""

EXECUTABLES = (NGINX, REGISTRY_BINARY)


def _with_blob_descriptor_cache(cfg: dict) -> dict:
    # Debian's shipped /etc/docker/registry/config.yml enables this cache; use it too.
    cfg["storage"]["cache"] = {"blobdescriptor": "inmemory"}
    return cfg


class UpstreamRegistry(RegistryProcess):
    """The upstream: access log on (the benchmark counts requests from it), error-level
    structured log, in-memory blob descriptor cache as in Debian's default config."""

    def config(self) -> dict:
        return _with_blob_descriptor_cache(super().config())


def tls_twin(upstream: UpstreamRegistry, workdir: Path, ca: LoopbackCA) -> UpstreamRegistry:
    """A second upstream process serving the first one's storage (the seeded images) over
    HTTPS, with a certificate signed by `ca`; not started."""
    twin = UpstreamRegistry(workdir=workdir, log_level="error", tls=ca)
    twin.storage_dir = upstream.storage_dir
    workdir.mkdir(parents=True, exist_ok=True)
    return twin


class BaselineRegistry(RegistryProcess):
    """distribution's own pull-through cache as the baseline: no access log, error-level
    logging and the in-memory blob descriptor cache, so it pays for no per-request logging
    the proxy (run with --log-level warning) does not do either."""

    def config(self) -> dict:
        cfg = _with_blob_descriptor_cache(super().config())
        cfg["log"]["level"] = "error"
        cfg["log"]["accesslog"] = {"disabled": True}
        return cfg


def mirror_proxy(
    workdir: Path,
    upstream_url: str,
    ca_file: Path | None = None,
    listener_ca: LoopbackCA | None = None,
) -> ProxyProcess:
    """hpc-mirror in front of the upstream with its own cache root and index under
    `workdir`, the proxy's default client settings, warning-level logging and no access
    log (like the baseline). `ca_file`: the CA an HTTPS upstream's certificate is from;
    `listener_ca`: serve HTTPS with that CA's server certificate."""
    entry = upstream_entry(upstream_url, prefix=PREFIX)
    if ca_file is not None:
        entry["ca_file"] = str(ca_file)
    config = proxy_config(workdir, {"bench": entry}, client=None)
    config["log"] = {"access": ""}
    return ProxyProcess(
        workdir, config, log_level="warning", start_timeout=20.0, listener_ca=listener_ca
    )


class NginxProcess(ServerProcess):
    """nginx in the foreground serving one directory with sendfile. `master_process off`
    makes the one process that serves the PID we started, so its CPU time can be read.
    `sendfile on; tcp_nopush on;` as in Debian's default nginx.conf: with TCP_CORK and
    nginx's 2 MiB sendfile_max_chunk some GETs run 2-3x faster at a third of the CPU.
    With `tls`, it serves HTTPS (TLS 1.2 and 1.3, OpenSSL's default ciphers) with that
    CA's server certificate; sendfile then does not apply (no kTLS here)."""

    name = "nginx"
    ready_path = "/"
    ready_statuses = (200, 403, 404)

    def __init__(self, workdir: Path, root: Path, tls: LoopbackCA | None = None) -> None:
        super().__init__(start_timeout=20.0)
        self.workdir = workdir
        self.root = root
        self.port = free_port()
        self.error_log = workdir / "error.log"
        self.ca = tls
        if tls is not None:
            self.tls = tls.client_context()

    def _listen(self) -> str:
        if self.ca is None:
            return f"listen {LOOPBACK}:{self.port};"
        return (
            f"listen {LOOPBACK}:{self.port} ssl;\n"
            f"        ssl_certificate {self.ca.cert_file};\n"
            f"        ssl_certificate_key {self.ca.key_file};\n"
            "        ssl_protocols TLSv1.2 TLSv1.3;"
        )

    def _spawn(self) -> subprocess.Popen[bytes]:
        w = self.workdir
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (w / name).mkdir(parents=True, exist_ok=True)
        conf = w / "nginx.conf"
        conf.write_text(f"""
master_process off;
worker_processes 1;
pid {w}/nginx.pid;
error_log {self.error_log} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path {w}/body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    server {{
        {self._listen()}
        root {self.root};
    }}
}}
""")
        command = [
            NGINX,
            "-p",
            str(w),
            "-e",
            str(self.error_log),
            "-c",
            str(conf),
            "-g",
            "daemon off;",
        ]
        return spawn_logged(command, w / "stdout.log", w / "stderr.log")

    def _failure_log(self) -> str:
        texts = (
            path.read_text(errors="replace")
            for path in (self.error_log, self.workdir / "stderr.log")
            if path.exists()
        )
        return "\n".join("\n".join(text.splitlines()[-30:]) for text in texts)

"""Warm GETs of the big layer over HTTPS: hpc-mirror serving TLS (`[server] tls_cert`)
against nginx with `worker_processes 1` serving the very same cached file with the same
certificate, in the same run. One mirror process against one nginx process: both encrypt
in userspace with the same OpenSSL (no kTLS here, so no sendfile for either)."""

from __future__ import annotations

from dataclasses import asdict

from benchmarks.harness import MIB, log
from benchmarks.proxy.blob_gets import WarmTarget, cpu_per_gib, nginx_path, warm_gets
from benchmarks.proxy.clients import get_blob
from benchmarks.proxy.report import Metric
from benchmarks.proxy.servers import PREFIX, NginxProcess
from benchmarks.proxy.session import Session
from tests.support.tls import make_loopback_ca

MIN_RATIO = 0.7
"""Target: the mirror's warm GET over TLS at least this fraction of nginx's."""


def measure(session: Session) -> None:
    image = session.big
    ca = make_loopback_ca(session.workdir / "listener-ca")
    proxy = session.new_proxy(listener_ca=ca)
    nginx: NginxProcess | None = None
    try:
        blob_path = image.blob_path(PREFIX)
        get_blob(session.client, proxy.port, blob_path, image.layer_size, "fill over TLS", ca=ca)
        proxy.wait_stored(f"sha256:{image.layer_hex}")
        nginx = NginxProcess(
            session.workdir / "nginx-tls", proxy.blob_path(image.layer_hex).parents[1], ca
        )
        session.stop_at_exit(nginx)
        nginx.start()
        log(f"nginx (TLS) pid {nginx.pid} on {nginx.url} serving {nginx.root}")
        targets = {
            "proxy": WarmTarget(proxy.port, blob_path, proxy.pid),
            "nginx": WarmTarget(nginx.port, nginx_path(image), nginx.pid),
        }
        warm = warm_gets(session, image.layer_size, targets, "warm TLS", ca)
    finally:
        if nginx is not None:
            nginx.stop()
        session.retire_proxy(proxy)
    label = f"{image.layer_size // MIB}M"
    negotiated = {name: warm.by_server[name][-1].tls for name in targets}
    notes = "; ".join(f"{name} {tls}" for name, tls in negotiated.items())
    for kind, index in (("best", 0), ("median", 1)):
        session.metrics.append(
            Metric(
                f"warm_tls_blob_{label}_{kind}",
                warm.speeds("proxy")[index],
                "MiB/s",
                warm.speeds("nginx")[index],
                "nginx TLS, 1 worker",
                f"ratio >= {MIN_RATIO}",
                f"ratio>={MIN_RATIO}",
                notes=notes,
            )
        )
    for name in targets:
        per = cpu_per_gib(warm.by_server[name])
        session.cpu_lines.append(
            f"{'warm TLS via ' + name:<28} " + ", ".join(f"{k} {v:.2f}" for k, v in per.items())
        )
    session.details["warm_tls"] = {
        name: [asdict(f) for f in warm.by_server[name]] for name in targets
    }

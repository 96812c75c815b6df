"""Cold GETs of the big layer from an upstream that serves HTTPS with a site's own CA.

A second docker-registry serves the upstream's storage over TLS with a certificate from a
CA made for the run. Each repetition starts a proxy with an empty cache and that CA as its
upstream's `ca_file`, reads the manifest as a pull does, and times the blob GET. The
proxy's CPU per GiB is judged against sha256 alone (over TLS the proxy also decrypts)."""

from __future__ import annotations

from dataclasses import asdict

from benchmarks.harness import MIB, log
from benchmarks.proxy.blob_gets import Samples, cpu_metric, cpu_per_gib, versus_sha256
from benchmarks.proxy.clients import get_blob, get_manifest
from benchmarks.proxy.cpu import sha256_cpu_per_gib
from benchmarks.proxy.report import Metric
from benchmarks.proxy.seed import TAG
from benchmarks.proxy.servers import PREFIX, tls_twin
from benchmarks.proxy.session import Session
from tests.support.tls import make_loopback_ca

MAX_RATIO = 2.0
"""Target: the proxy's CPU per GiB over TLS at most this many times sha256 alone."""


def measure(session: Session) -> None:
    image = session.big
    ca = make_loopback_ca(session.workdir / "tls-ca")
    upstream = tls_twin(session.upstream, session.workdir / "tls-upstream", ca)
    session.stop_at_exit(upstream)
    upstream.start()
    log(f"TLS upstream docker-registry pid {upstream.pid} on {upstream.url} (same storage)")
    cold = Samples()
    try:
        for rep in range(session.reps):
            proxy = session.new_proxy(upstream.url, ca.ca_file)
            try:
                get_manifest(proxy.port, image.manifest_path(TAG, PREFIX), "cold TLS manifest")
                fetch = get_blob(
                    session.client,
                    proxy.port,
                    image.blob_path(PREFIX),
                    image.layer_size,
                    "cold proxy GET from a TLS upstream",
                    {"proxy": proxy.pid, "upstream": upstream.pid},
                )
                cold.add("proxy", fetch)
                cold.sha256_cpu.append(sha256_cpu_per_gib())
            finally:
                session.retire_proxy(proxy)
            log(
                f"cold {image.layer_size // MIB}M from TLS upstream rep {rep + 1}: proxy "
                f"{fetch.mib_s:,.0f} MiB/s ({fetch.seconds:.2f} s)"
            )
            log(f"    CPU s/GiB: [{fetch.cpu_text()}]; {versus_sha256(fetch, cold.sha256_cpu[-1])}")
    finally:
        upstream.stop()
    label = f"{image.layer_size // MIB}M"
    _, median = cold.speeds("proxy")
    session.metrics += [
        Metric(f"cold_tls_blob_{label}_median", median, "MiB/s", notes="HTTPS upstream, site CA"),
        cpu_metric(f"cold_tls_blob_{label}_proxy_cpu", cold, MAX_RATIO),
    ]
    per = cpu_per_gib(cold.by_server["proxy"])
    session.cpu_lines.append(
        f"{'cold via proxy, TLS upstream':<28} " + ", ".join(f"{k} {v:.2f}" for k, v in per.items())
    )
    session.details["cold_tls"] = {
        "proxy": [asdict(f) for f in cold.by_server["proxy"]],
        "sha256_alone_cpu_s_per_gib": cold.sha256_cpu,
    }

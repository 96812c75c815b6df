"""Many clients at once on a cached manifest: `wrk -t2 -c1000 --latency` by tag (within its
TTL) against a fresh proxy process on a warm cache. Requests/s, p50/p99 latency, errors
(non-2xx and wrk's socket errors), upstream requests meanwhile, peak RSS."""

from __future__ import annotations

from dataclasses import asdict

from benchmarks.harness import log
from benchmarks.load import subject
from benchmarks.load.plan import Plan
from benchmarks.proxy.clients import http_get, run_wrk
from benchmarks.proxy.report import Metric
from benchmarks.proxy.seed import TAG
from benchmarks.proxy.servers import PREFIX
from benchmarks.proxy.session import Session
from tests.support.oci import OCI_MANIFEST
from tests.support.proxy import ProxyProcess


def measure(session: Session, proxy: ProxyProcess, plan: Plan) -> None:
    image = session.mid
    subject.start(session, proxy)
    subject.warm(proxy, image)
    path = image.manifest_path(TAG, PREFIX)
    mark = session.upstream.mark()
    with subject.watched(session, proxy) as watch:
        result = run_wrk(
            proxy.port,
            path,
            plan.manifest_seconds,
            OCI_MANIFEST,
            connections=plan.manifest_clients,
            latency=True,
            timeout=10,
        )
    upstream_requests = session.upstream.count(since=mark)
    status_after = http_get(proxy.port, path, {"Accept": OCI_MANIFEST})[0]
    errors = result.non_2xx + result.socket_error_count + (status_after != 200)
    p50, p99 = result.latency_ms.get("50%"), result.latency_ms.get("99%")
    log(
        f"{plan.manifest_clients} clients on the cached manifest by tag: "
        f"{result.requests_per_second:,.0f} req/s, p50 {p50} ms, p99 {p99} ms, "
        f"{result.requests} requests, non-2xx {result.non_2xx}, socket errors "
        f"'{result.socket_errors or 'none'}', status after {status_after}, upstream "
        f"requests {upstream_requests}; {watch.footprint.describe()}"
    )
    if result.requests:
        session.cpu_lines.append(
            f"{f'{plan.manifest_clients} manifest clients':<28} CPU us/request: "
            + ", ".join(
                f"{name} {watch.cpu.total(name) / result.requests * 1e6:.0f}"
                for name in watch.cpu.used
            )
        )
    name = f"manifest_{plan.manifest_clients}c"
    session.metrics += [
        Metric(f"{name}_rps", result.requests_per_second, "req/s"),
        Metric(f"{name}_p50", p50, "ms"),
        Metric(f"{name}_p99", p99, "ms"),
        *subject.footprint_metrics(
            name,
            watch,
            errors,
            f"non-2xx {result.non_2xx}, socket errors {result.socket_errors or 'none'}, "
            f"upstream requests {upstream_requests}",
        ),
    ]
    session.details["manifest_clients"] = {
        **asdict(result),
        "status_after": status_after,
        "upstream_requests": upstream_requests,
        "cpu_seconds": watch.cpu.used,
        "peak_rss_mib": watch.footprint.peak_mib,
        "peak_fds": watch.footprint.peak_fds,
    }

"""Manifest requests/s by tag and by digest with wrk: the warm proxy (tag within its TTL)
against distribution's proxy mode, warmed first. Sample responses are checked against the
manifest digest before wrk's figures are trusted."""

from __future__ import annotations

import hashlib
from dataclasses import asdict

from benchmarks.harness import BenchError, log
from benchmarks.proxy.clients import WrkResult, get_manifest, http_get, run_wrk
from benchmarks.proxy.cpu import CpuMeter
from benchmarks.proxy.report import Metric
from benchmarks.proxy.seed import TAG
from benchmarks.proxy.servers import PREFIX
from benchmarks.proxy.session import Session
from tests.support.oci import OCI_MANIFEST
from tests.support.proxy import ProxyProcess

Target = tuple[int, int | None, dict[str, str]]
"""A server under load: port, PID, and its manifest path by "tag" and by "digest"."""

TARGETS = {"tag": 4.0, "digest": 2.0}
"""Lookup kind -> how many times distribution's requests/s the proxy must reach."""


def measure(session: Session, proxy: ProxyProcess) -> None:
    """Run wrk against the proxy and a fresh distribution peer; retire both."""
    image = session.mid
    peer = session.new_baseline()
    log(f"distribution proxy-mode peer pid {peer.pid} on {peer.url}")
    targets: dict[str, Target] = {
        "proxy": (
            proxy.port,
            proxy.pid,
            {
                "tag": image.manifest_path(TAG, PREFIX),
                "digest": image.manifest_path(image.manifest_digest, PREFIX),
            },
        ),
        "distproxy": (
            peer.port,
            peer.pid,
            {"tag": image.manifest_path(TAG), "digest": image.manifest_path(image.manifest_digest)},
        ),
    }
    # Warm both (the proxy holds the manifest since the herd) and check sample responses.
    for who, (port, _, paths) in targets.items():
        for kind, path in paths.items():
            for _ in range(2):
                body = get_manifest(port, path, f"{who} manifest by {kind}")
            if "sha256:" + hashlib.sha256(body).hexdigest() != image.manifest_digest:
                raise BenchError(f"{who} by {kind}: manifest body does not match digest")
    results = {
        (who, kind): _run(session, who, kind, targets[who])
        for kind in TARGETS
        for who in ("proxy", "distproxy")
    }
    for kind, bound in TARGETS.items():
        mine, theirs = results[("proxy", kind)], results[("distproxy", kind)]
        notes = []
        if mine.non_2xx or theirs.non_2xx:
            notes.append(f"non-2xx proxy {mine.non_2xx} / peer {theirs.non_2xx}")
        session.metrics.append(
            Metric(
                f"manifest_by_{kind}_rps",
                mine.requests_per_second,
                "req/s",
                theirs.requests_per_second,
                "distribution proxy mode",
                f"ratio >= {bound:g}",
                f"ratio>={bound}",
                "; ".join(notes),
            )
        )
    log_lines = len(proxy.log().splitlines())
    session.details["proxy_log_lines_after_wrk"] = log_lines
    if log_lines > 50:
        session.proxy_issues.append(
            f"the proxy wrote {log_lines} log lines by the end of "
            "the manifest benchmark (per-request logging?)"
        )
    session.retire_baseline(peer)
    session.retire_proxy(proxy)


def _run(session: Session, who: str, kind: str, target: Target) -> WrkResult:
    """One wrk run, with the CPU it cost and the upstream requests it caused."""
    port, pid, paths = target
    upstream = session.upstream
    mark = upstream.mark()
    with CpuMeter({who: pid, "upstream": upstream.pid}) as meter:
        result = run_wrk(port, paths[kind], session.wrk_seconds, OCI_MANIFEST)
    upstream_requests = upstream.count(since=mark)
    status = http_get(port, paths[kind], {"Accept": OCI_MANIFEST})[0]
    log(
        f"manifest by {kind} via {who}: {result.requests_per_second:,.0f} req/s "
        f"(latency avg {result.latency_avg}, {result.requests} requests, non-2xx "
        f"{result.non_2xx}, socket errors '{result.socket_errors or 'none'}', "
        f"upstream requests during run {upstream_requests}, status after: {status})"
    )
    if result.requests:
        per_request = ", ".join(
            f"{name} {meter.total(name) / result.requests * 1e6:.0f}" for name in meter.used
        )
        session.cpu_lines.append(
            f"{'manifest by ' + kind + ' via ' + who:<28} CPU us/request: {per_request}"
        )
    session.details[f"wrk_{who}_{kind}"] = {
        **asdict(result),
        "upstream_requests": upstream_requests,
        "cpu_seconds": meter.used,
    }
    if result.non_2xx or result.socket_errors or status != 200:
        session.proxy_issues.append(
            f"wrk {who} by {kind}: non-2xx {result.non_2xx}, socket errors "
            f"{result.socket_errors or 'none'}, status after the run {status}"
        )
    return result

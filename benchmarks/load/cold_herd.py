"""Many clients at once on one blob the proxy has not cached: a new proxy with an empty
cache, every client sends its blob GET at the same moment and nothing else (as clients do
that already hold the manifest, so the proxy must itself check that the repository may
serve the blob). The upstream's access log says what the herd cost it: every request for
that blob, by method, must add up to exactly one."""

from __future__ import annotations

from collections import Counter

from benchmarks.harness import MIB, log
from benchmarks.load import subject
from benchmarks.load.plan import Plan
from benchmarks.load.streams import run_streams
from benchmarks.proxy.report import Metric
from benchmarks.proxy.servers import PREFIX
from benchmarks.proxy.session import Session

VERIFIED = 2
"""Bodies hashed by the client; the others are checked by length only."""


def measure(session: Session, plan: Plan) -> None:
    image = session.big
    upstream = session.upstream
    # The upstream's copy is read once first, so the herd starts from the page cache.
    run_streams(upstream.port, image.blob_path(), 1, timeout=120)
    proxy = subject.start(session)
    mark = upstream.mark()
    with subject.watched(session, proxy) as watch:
        run = run_streams(
            proxy.port, image.blob_path(PREFIX), plan.cold_clients, verify=VERIFIED, timeout=300
        )
    requests = upstream.requests()[mark:]
    for_blob = Counter(r.method for r in requests if image.layer_hex in r.path)
    others = len(requests) - sum(for_blob.values())
    failures = run.failures(image.layer_size, image.layer_hex)
    by_method = ", ".join(f"{count} {method}" for method, count in sorted(for_blob.items()))
    name = f"cold_{plan.cold_clients}x{image.layer_size // MIB}M"
    log(
        f"{plan.cold_clients} cold clients of one {image.layer_size // MIB} MiB blob: "
        f"upstream requests for the blob: {by_method or 'none'} (other upstream requests "
        f"{others}); wall {run.wall:.1f} s, {run.aggregate_mib_s:,.0f} MiB/s aggregate, "
        f"failures {len(failures)}; {watch.footprint.describe()}"
    )
    subject.record_streams(
        session,
        name,
        f"{plan.cold_clients} cold clients",
        run,
        watch,
        failures,
        upstream_requests_for_blob=dict(for_blob),
        other_upstream_requests=others,
    )
    session.metrics += [
        Metric(
            f"{name}_upstream_requests",
            sum(for_blob.values()),
            "requests",
            target="== 1",
            check="value==1",
            notes=f"GET {for_blob['GET']}, HEAD {for_blob['HEAD']}"
            + "".join(f", {m} {n}" for m, n in for_blob.items() if m not in ("GET", "HEAD")),
        ),
        Metric(f"{name}_upstream_GETs", for_blob["GET"], "requests"),
        Metric(f"{name}_upstream_HEADs", for_blob["HEAD"], "requests"),
        Metric(f"{name}_wall", run.wall, "s"),
        Metric(f"{name}_aggregate", run.aggregate_mib_s, "MiB/s"),
        *subject.footprint_metrics(name, watch, len(failures)),
    ]
    session.retire_proxy(proxy)

"""Many streams of one cached blob at once, against a fresh proxy process on a warm cache:
aggregate and per-stream MiB/s, errors, peak RSS, CPU seconds per GiB served."""

from __future__ import annotations

from benchmarks.harness import MIB, log
from benchmarks.load import subject
from benchmarks.load.plan import Plan
from benchmarks.load.streams import run_streams
from benchmarks.proxy.report import Metric
from benchmarks.proxy.servers import PREFIX
from benchmarks.proxy.session import Session
from tests.support.proxy import ProxyProcess

VERIFIED = 2
"""Streams whose body is hashed; hashing them all would make the client the bottleneck."""


def measure(session: Session, proxy: ProxyProcess, plan: Plan) -> None:
    image = session.mid
    subject.start(session, proxy)
    subject.warm(proxy, image)
    with subject.watched(session, proxy) as watch:
        run = run_streams(
            proxy.port,
            image.blob_path(PREFIX),
            plan.stream_clients,
            verify=VERIFIED,
            timeout=240,
        )
    failures = run.failures(image.layer_size, image.layer_hex)
    name = f"warm_{plan.stream_clients}x{image.layer_size // MIB}M"
    log(
        f"{plan.stream_clients} streams of the cached {image.layer_size // MIB} MiB blob: "
        f"{run.aggregate_mib_s:,.0f} MiB/s aggregate, wall {run.wall:.1f} s, per stream "
        f"median {run.median_mib_s() or 0:,.1f} / min {run.min_mib_s() or 0:,.1f} MiB/s, "
        f"failures {len(failures)}; {watch.footprint.describe()}"
    )
    subject.record_streams(
        session, name, f"{plan.stream_clients} warm streams", run, watch, failures
    )
    session.metrics += [
        Metric(f"{name}_aggregate", run.aggregate_mib_s, "MiB/s"),
        Metric(f"{name}_stream_median", run.median_mib_s(), "MiB/s"),
        *subject.footprint_metrics(name, watch, len(failures)),
    ]

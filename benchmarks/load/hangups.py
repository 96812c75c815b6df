"""Many clients hanging up mid-download of a cached blob, against a fresh proxy process on
a warm cache: each reads the first MiB and closes its socket with the rest unread (the
kernel then sends a RST, as when a client is killed). The proxy's open fds and RSS before,
at peak, and after a short settle must come back to the baseline, and a complete GET must
still work afterwards."""

from __future__ import annotations

import time

from benchmarks.harness import MIB, log
from benchmarks.load import subject
from benchmarks.load.footprint import memory_mib, open_fds
from benchmarks.load.plan import Plan
from benchmarks.load.streams import run_streams
from benchmarks.proxy.report import Metric
from benchmarks.proxy.servers import PREFIX
from benchmarks.proxy.session import Session
from tests.support.proxy import ProxyProcess

PRIMING_STREAMS = 4
"""Complete GETs at once before the baseline, so what the proxy keeps open for good (its
worker threads' handles, say) already exists when the baseline is read."""


def measure(session: Session, proxy: ProxyProcess, plan: Plan) -> None:
    image = session.mid
    subject.start(session, proxy)
    subject.warm(proxy, image)
    assert proxy.pid is not None
    pid, path = proxy.pid, image.blob_path(PREFIX)
    run_streams(proxy.port, path, PRIMING_STREAMS, timeout=120)
    fds_before, rss_before = _footprint(pid)
    with subject.watched(session, proxy) as watch:
        run = run_streams(
            proxy.port, path, plan.hangup_clients, hang_up_after=plan.hangup_after, timeout=120
        )
        settled_after = _settle(pid, fds_before, plan.settle_seconds)
        fds_after, rss_after = _footprint(pid)
    failures = run.failures(image.layer_size, image.layer_hex, hang_up_after=plan.hangup_after)
    check = run_streams(proxy.port, path, 1, verify=1, timeout=120)
    failures += [
        f"complete GET after the hang-ups: {line}"
        for line in check.failures(image.layer_size, image.layer_hex)
    ]
    settle_text = (
        f"back to baseline after {settled_after:.1f} s"
        if settled_after is not None
        else f"not back to baseline after {plan.settle_seconds:.0f} s"
    )
    log(
        f"{plan.hangup_clients} clients hanging up after {plan.hangup_after // MIB} MiB of "
        f"{image.layer_size // MIB} MiB: fds {fds_before} before, {watch.footprint.peak_fds} "
        f"at peak, {fds_after} after ({settle_text}); RSS {rss_before:.1f} MiB before, "
        f"{rss_after:.1f} after; failures {len(failures)}; {watch.footprint.describe()}"
    )
    name = f"hangup_{plan.hangup_clients}c"
    subject.record_streams(
        session,
        name,
        f"{plan.hangup_clients} hang-ups",
        run,
        watch,
        failures,
        fds_before=fds_before,
        fds_after=fds_after,
        settled_after_seconds=settled_after,
        rss_before_mib=rss_before,
        rss_after_mib=rss_after,
    )
    session.metrics += [
        Metric(
            f"{name}_fds_after",
            fds_after,
            "fds",
            target=f"<= {fds_before} (before)",
            check=f"value<={fds_before}",
            notes=f"{fds_before} before, {watch.footprint.peak_fds} at peak; {settle_text}",
        ),
        Metric(f"{name}_rss_before", rss_before, "MiB"),
        Metric(f"{name}_rss_after", rss_after, "MiB"),
        *subject.footprint_metrics(name, watch, len(failures)),
    ]


def _footprint(pid: int) -> tuple[int, float]:
    """Open fds and VmRSS (MiB) of the proxy, which must be running."""
    fds, memory = open_fds(pid), memory_mib(pid)
    if fds is None or memory is None:
        raise ProcessLookupError(f"the proxy (pid {pid}) is gone")
    return fds, memory[0]


def _settle(pid: int, baseline: int, seconds: float) -> float | None:
    """Seconds until the proxy's open fds are back to `baseline`, or None if they are not
    within `seconds`."""
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        fds = open_fds(pid)
        if fds is not None and fds <= baseline:
            return time.perf_counter() - started
        time.sleep(0.1)
    return None

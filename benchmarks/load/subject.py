"""The proxy under load: each scenario gets a fresh process (so its peak RSS is the
scenario's), started with a soft RLIMIT_NOFILE of 1024 and watched from /proc while the
clients run; the footprint metrics every scenario reports."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from benchmarks.harness import GIB, BenchError, log
from benchmarks.load.footprint import (
    START_NOFILE,
    Sampler,
    children_nofile,
    nofile_limits,
    raise_nofile,
)
from benchmarks.load.plan import PEAK_RSS_TARGET_MIB
from benchmarks.load.streams import StreamRun, run_streams
from benchmarks.proxy.clients import get_manifest
from benchmarks.proxy.cpu import CpuMeter
from benchmarks.proxy.report import Metric
from benchmarks.proxy.seed import TAG, Image
from benchmarks.proxy.servers import PREFIX
from benchmarks.proxy.session import Session
from tests.support.proxy import ProxyProcess


def start(session: Session, proxy: ProxyProcess | None = None) -> ProxyProcess:
    """A new proxy with an empty cache, or `proxy` restarted (a new process on its warm
    cache), with soft RLIMIT_NOFILE START_NOFILE at start. If the proxy does not raise
    that itself, the benchmark raises it to the hard limit, so the scenarios measure
    throughput rather than fd exhaustion, and says so."""
    with children_nofile(START_NOFILE):
        if proxy is None:
            proxy = session.new_proxy()
        else:
            proxy.restart()
            log(f"hpc-mirror restarted: pid {proxy.pid} on its warm cache")
    assert proxy.pid is not None
    soft, hard = nofile_limits(proxy.pid)
    if soft > START_NOFILE:
        note = f"the proxy raised its soft RLIMIT_NOFILE itself: {START_NOFILE} -> {soft}"
    elif soft < hard:
        note = (
            f"the proxy kept its soft RLIMIT_NOFILE of {soft}; the benchmark raised it to "
            f"{raise_nofile(proxy.pid)} (prlimit) so the scenarios measure throughput, "
            "not fd exhaustion"
        )
    else:
        note = f"the proxy's RLIMIT_NOFILE is {soft} (soft = hard)"
    log(f"    {note}")
    session.details.setdefault("nofile", []).append(note)
    return proxy


def warm(proxy: ProxyProcess, image: Image) -> None:
    """What a pull does first, untimed: the manifest by tag, then the layer; checks both
    (this also caches them in a proxy with an empty cache)."""
    body = get_manifest(proxy.port, image.manifest_path(TAG, PREFIX), "warm-up manifest")
    if "sha256:" + hashlib.sha256(body).hexdigest() != image.manifest_digest:
        raise BenchError("warm-up: the manifest body does not match its digest")
    run = run_streams(proxy.port, image.blob_path(PREFIX), 1, verify=1, timeout=120)
    failures = run.failures(image.layer_size, image.layer_hex)
    if failures:
        raise BenchError(f"warm-up GET of the layer failed: {failures[0]}")


@dataclass
class Watch:
    """The proxy's footprint and everyone's CPU while a scenario ran."""

    footprint: Sampler
    cpu: CpuMeter


@contextlib.contextmanager
def watched(session: Session, proxy: ProxyProcess) -> Iterator[Watch]:
    """Sample the proxy's RSS and fds, and meter the CPU of the proxy, the upstream and
    the clients, for the block."""
    assert proxy.pid is not None
    with (
        Sampler(proxy.pid) as footprint,
        CpuMeter({"proxy": proxy.pid, "upstream": session.upstream.pid}) as cpu,
    ):
        yield Watch(footprint, cpu)


def footprint_metrics(name: str, watch: Watch, errors: int, notes: str = "") -> list[Metric]:
    """The two targets every scenario has: no errors, and peak RSS within bounds."""
    return [
        Metric(f"{name}_errors", errors, "errors", target="== 0", check="value==0", notes=notes),
        Metric(
            f"{name}_peak_rss",
            watch.footprint.peak_mib,
            "MiB",
            target=f"<= {PEAK_RSS_TARGET_MIB}",
            check=f"value<={PEAK_RSS_TARGET_MIB}",
            notes=f"VmHWM {watch.footprint.hwm_mib or 0:.1f}, sampled max "
            f"{watch.footprint.peak_rss_mib:.1f}",
        ),
    ]


def record_streams(
    session: Session,
    name: str,
    label: str,
    run: StreamRun,
    watch: Watch,
    failures: list[str],
    **extra: object,
) -> None:
    """The CPU line, the failures and the JSON details of one run of streams."""
    moved_gib = run.received / GIB
    if moved_gib:
        session.cpu_lines.append(
            f"{label + ', per GiB served':<28} "
            + ", ".join(f"{who} {watch.cpu.total(who) / moved_gib:.2f}" for who in watch.cpu.used)
        )
    if failures:
        session.proxy_issues.append(
            f"{label}: {len(failures)} failed streams (first 20):\n" + "\n".join(failures[:20])
        )
    session.details[name] = {
        **extra,
        "wall_seconds": run.wall,
        "aggregate_mib_s": run.aggregate_mib_s,
        "hung": run.hung,
        "failures": failures,
        "cpu_seconds": watch.cpu.used,
        "peak_rss_mib": watch.footprint.peak_mib,
        "vm_hwm_mib": watch.footprint.hwm_mib,
        "peak_fds": watch.footprint.peak_fds,
        "streams": [asdict(s) for s in run.streams],
    }

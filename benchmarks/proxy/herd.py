"""32 clients at once on an empty cache, released together by a barrier: each GETs the
mid image's manifest by tag and then its layer, and hashes it. The upstream must see one
blob GET, and every client must get every byte right."""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import asdict, dataclass

from benchmarks.harness import GIB, MIB, log
from benchmarks.proxy.clients import Fetch, http_get, socket_get
from benchmarks.proxy.cpu import CpuMeter
from benchmarks.proxy.report import Metric
from benchmarks.proxy.seed import TAG, Image
from benchmarks.proxy.servers import PREFIX
from benchmarks.proxy.session import Session
from tests.support.oci import OCI_MANIFEST
from tests.support.proxy import ProxyProcess

CONCURRENT_CLIENTS = 32


@dataclass
class Herd:
    """What the released clients got, how long the herd took, the CPU the servers used."""

    results: list[Fetch | None]
    wall: float
    hung: int
    cpu: CpuMeter


def measure(session: Session) -> ProxyProcess:
    """Run the herd; returns the (now warm) proxy for the manifest benchmark."""
    image = session.mid
    proxy = session.new_proxy()
    mark = session.upstream.mark()
    herd = _release_herd(session, proxy, image)
    requests = session.upstream.requests()[mark:]
    blob_gets = sum(1 for r in requests if r.method == "GET" and image.layer_hex in r.path)
    blob_heads = sum(1 for r in requests if r.method == "HEAD" and "/blobs/" in r.path)
    manifest_requests = sum(1 for r in requests if "/manifests/" in r.path)
    failures = _failures(herd.results, image)
    good = [f for f in herd.results if f is not None and not f.error and f.status == 200]
    per_client = [f.mib_s for f in good]
    log(
        f"{CONCURRENT_CLIENTS} concurrent cold clients of {image.layer_size // MIB} MiB: "
        f"wall {herd.wall:.2f} s, per-client median "
        f"{statistics.median(per_client) if per_client else 0:,.0f} MiB/s, upstream: "
        f"{blob_gets} blob GETs, {blob_heads} blob HEADs, {manifest_requests} manifest "
        f"requests; failures {len(failures)}, hung {herd.hung}"
    )
    log(f"    CPU s: {herd.cpu.describe()} (client includes sha256 of every body)")
    moved_gib = len(good) * image.layer_size / GIB
    if moved_gib:
        session.cpu_lines.append(
            f"{'32 concurrent, per GiB served':<28} "
            + ", ".join(f"{name} {herd.cpu.total(name) / moved_gib:.2f}" for name in herd.cpu.used)
        )
    if failures:
        banner = "!" * 78
        print(
            f"{banner}\nINTEGRITY FAILURES in the {CONCURRENT_CLIENTS}-client test:\n"
            + "\n".join(failures)
            + f"\n{banner}",
            flush=True,
        )
        session.proxy_issues.append("concurrent clients failed:\n" + "\n".join(failures))
    label = f"{CONCURRENT_CLIENTS}x{image.layer_size // MIB}M"
    session.metrics += [
        Metric(
            f"concurrent{label}_upstream_blob_GETs",
            blob_gets,
            "GETs",
            target="== 1",
            check="value==1",
            notes=f"{blob_heads} HEADs, {manifest_requests} manifest reqs",
        ),
        Metric(
            f"concurrent{label}_integrity_failures",
            len(failures),
            "failures",
            target="== 0",
            check="value==0",
        ),
        *_speed_metrics(label, herd.wall, per_client, len(good) * image.layer_size),
    ]
    session.details["concurrent"] = {
        "clients": [asdict(f) if f else None for f in herd.results],
        "wall_seconds": herd.wall,
        "upstream_blob_gets": blob_gets,
        "upstream_blob_heads": blob_heads,
        "upstream_manifest_requests": manifest_requests,
        "cpu_seconds": herd.cpu.used,
        "failures": failures,
    }
    return proxy


def _speed_metrics(label: str, wall: float, per_client: list[float], moved: int) -> list[Metric]:
    """Wall time, per-client MiB/s (median and slowest) and aggregate MiB/s, for info."""
    return [
        Metric(f"concurrent{label}_wall", wall, "s"),
        Metric(
            f"concurrent{label}_client_median",
            statistics.median(per_client) if per_client else None,
            "MiB/s",
        ),
        Metric(f"concurrent{label}_client_min", min(per_client) if per_client else None, "MiB/s"),
        Metric(f"concurrent{label}_aggregate", moved / MIB / wall if wall > 0 else None, "MiB/s"),
    ]


def _release_herd(session: Session, proxy: ProxyProcess, image: Image) -> Herd:
    """Start the clients and release them at once; wait up to 240 s for them."""
    barrier = threading.Barrier(CONCURRENT_CLIENTS + 1)
    results: list[Fetch | None] = [None] * CONCURRENT_CLIENTS
    finished: list[float] = [0.0] * CONCURRENT_CLIENTS
    manifest_path = image.manifest_path(TAG, PREFIX)
    blob_path = image.blob_path(PREFIX)

    def client(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            status, _, body = http_get(
                proxy.port, manifest_path, {"Accept": OCI_MANIFEST}, timeout=60
            )
            if status != 200:
                results[index] = Fetch(
                    status, 0, 0.0, None, f"manifest answered {status}: {body[:200]!r}"
                )
                return
            results[index] = socket_get(proxy.port, blob_path, hash_body=True, timeout=180)
        except Exception as exc:  # reported below, never lost
            results[index] = Fetch(0, 0, 0.0, None, f"{type(exc).__name__}: {exc}")
        finally:
            finished[index] = time.perf_counter()

    threads = [
        threading.Thread(target=client, args=(i,), daemon=True) for i in range(CONCURRENT_CLIENTS)
    ]
    for thread in threads:
        thread.start()
    with CpuMeter({"proxy": proxy.pid, "upstream": session.upstream.pid}) as meter:
        barrier.wait(timeout=30)
        started = time.perf_counter()
        deadline = started + 240
        for thread in threads:
            thread.join(timeout=max(0.1, deadline - time.perf_counter()))
    hung = sum(1 for thread in threads if thread.is_alive())
    wall = (max(finished) if not hung else time.perf_counter()) - started
    return Herd(results, wall, hung, meter)


def _failures(results: list[Fetch | None], image: Image) -> list[str]:
    """One line per client that did not get all the bytes with the right sha256."""
    failures = []
    for index, fetch in enumerate(results):
        if fetch is None:
            failures.append(f"client {index}: did not finish")
        elif fetch.error or fetch.status != 200:
            failures.append(
                f"client {index}: status {fetch.status}, {fetch.size} bytes, {fetch.error}"
            )
        elif fetch.size != image.layer_size:
            failures.append(f"client {index}: {fetch.size} of {image.layer_size} bytes")
        elif fetch.sha256 != image.layer_hex:
            failures.append(f"client {index}: sha256 {fetch.sha256} != {image.layer_hex}")
    return failures

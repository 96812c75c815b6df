"""`/metrics` as Prometheus sees it: Debian's real `prometheus` scrapes a live mirror every
second while real pulls run, and the test asks Prometheus' HTTP API for the series."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.conftest import upstream_entry
from tests.support.clients import fetch_sha256
from tests.support.processes import LOOPBACK, free_port
from tests.support.prometheus import PrometheusProcess
from tests.support.proxy import ProxyProcess, proxy_config

BLOB_GETS = 'sum(hpc_mirror_upstream_requests_total{route="blob",method="GET"})'
BLOB_HEADS = 'sum(hpc_mirror_upstream_requests_total{route="blob",method="HEAD"})'
SENT = "sum(hpc_mirror_blob_sent_bytes_total{{result=~{!r}}})"


def _herd(url: str, clients: int) -> list[tuple[int, str, int]]:
    """`clients` GETs of `url` released at once."""
    start = threading.Barrier(clients)

    def fetch(_: int) -> tuple[int, str, int]:
        start.wait()
        return fetch_sha256(url)

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(fetch, range(clients)))


def _assert_one_fill_for_the_herd(prometheus: PrometheusProcess, size: int, clients: int) -> None:
    """One upstream GET of the blob and no HEAD; every other client joined the fill (or,
    arriving after it ended, got a cache hit); every client got every byte."""
    assert prometheus.value(BLOB_GETS) == 1
    assert prometheus.value(BLOB_HEADS) == 0
    assert prometheus.value(SENT.format("fill_leader")) == size
    late = prometheus.value(SENT.format("hit")) / size
    followers = prometheus.value("sum(hpc_mirror_herd_followers_total)")
    assert followers >= 1 and followers + late == clients - 1
    assert prometheus.value(SENT.format(".*")) == clients * size
    assert prometheus.value("sum(hpc_mirror_upstream_received_bytes_total)") == size
    assert prometheus.value('sum(hpc_mirror_fill_duration_seconds_count{outcome="verified"})') == 1
    assert prometheus.value("sum(hpc_mirror_fills_in_flight)") == 0
    blob_answers = 'sum(hpc_mirror_requests_total{route="blob",method="GET",status="200"})'
    assert prometheus.value(blob_answers) == clients


def test_a_cold_herd_costs_one_upstream_get_and_a_warm_pull_is_a_hit(
    make_proxy, upstream, seeded, tmp_path
):
    proxy = make_proxy({"up": upstream_entry(upstream.url)})
    image, blob = seeded["big/blob:1.0"], seeded.big_blob
    url = f"{proxy.url}/v2/{image.repository}/blobs/{blob.digest}"
    clients = 6
    with PrometheusProcess(tmp_path / "prometheus", proxy.host) as prometheus:
        prometheus.scraped_after(time.time())  # scraping before the pull starts
        assert _herd(url, clients) == [(200, blob.digest, blob.size)] * clients
        proxy.wait_stored(blob.digest)
        prometheus.scraped_after(time.time())
        _assert_one_fill_for_the_herd(prometheus, blob.size, clients)
        hits_before = prometheus.value(SENT.format("hit"))

        assert fetch_sha256(url) == (200, blob.digest, blob.size)
        assert prometheus.settled(SENT.format("hit")) == hits_before + blob.size
        assert prometheus.value(BLOB_GETS) == 1
        assert prometheus.value('hpc_mirror_build_info{version="0.1.0"}') == 1


def test_workers_report_one_coherent_set_on_the_metrics_port(upstream, seeded, tmp_path):
    """With `--workers 2` and `metrics_port`, whichever worker answers a scrape reports the
    sums over both: the herd (spread over both workers) is still one upstream GET, and the
    requests counted are every request made, whichever worker served it."""
    config = proxy_config(tmp_path / "mirror", {"up": upstream_entry(upstream.url)})
    metrics_port = config["server"]["metrics_port"] = free_port()
    config["log"] = {"format": "json"}  # whose lines name the worker that served
    image, blob = seeded["big/blob:1.0"], seeded.big_blob
    clients = 8
    with (
        ProxyProcess(tmp_path / "mirror", config, args=("--workers", "2")) as proxy,
        PrometheusProcess(tmp_path / "prometheus", f"{LOOPBACK}:{metrics_port}") as prometheus,
    ):
        assert requests.get(f"{proxy.url}/metrics", timeout=10).status_code == 404
        prometheus.scraped_after(time.time())
        url = f"{proxy.url}/v2/{image.repository}/blobs/{blob.digest}"
        assert _herd(url, clients) == [(200, blob.digest, blob.size)] * clients
        listings = _until_both_workers_served(proxy)
        proxy.wait_stored(blob.digest)
        prometheus.scraped_after(time.time())
        _assert_one_fill_for_the_herd(prometheus, blob.size, clients)
        catalog = 'sum(hpc_mirror_requests_total{route="catalog",method="GET",status="200"})'
        assert prometheus.value(catalog) == listings
        # One series per label set, not one per worker.
        assert len(prometheus.query("hpc_mirror_herd_followers_total")) == 1
        assert prometheus.value("count(hpc_mirror_build_info)") == 1


def _until_both_workers_served(proxy: ProxyProcess) -> int:
    """List the catalog, each time on a new connection, until the access log (JSON, on
    standard output) shows both workers answered some; how many listings that took."""
    assert proxy.pid is not None
    workers = {
        int(pid) for pid in open(f"/proc/{proxy.pid}/task/{proxy.pid}/children").read().split()
    }
    for listings in range(1, 500):
        assert requests.get(f"{proxy.url}/v2/_catalog", timeout=10).status_code == 200
        lines = [json.loads(line) for line in proxy.log().splitlines() if line.startswith("{")]
        served = {line["pid"] for line in lines if line["path"] == "/v2/_catalog"}
        if len(served & workers) == 2:
            return listings
    raise AssertionError(f"one worker served every listing:\n{proxy.log()[-2000:]}")


def _workers(pid: int) -> list[int]:
    """The worker processes `mirror serve` with PID `pid` started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_text()
        except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm) state"
        if parent == pid and "spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def test_a_worker_that_ends_leaves_the_live_gauges(upstream, tmp_path):
    """The parent marks a worker that ended: its gauges that count live workers (fills in
    flight, breakers, cache size) leave the sums, its counters stay; at exit the directory
    goes too."""
    import os
    import signal

    config = proxy_config(tmp_path / "mirror", {"up": upstream_entry(upstream.url)})
    proxy = ProxyProcess(tmp_path / "mirror", config, args=("--workers", "2")).start()
    try:
        directory = Path(config["cache"]["index_dir"]) / "metrics" / str(proxy.pid)
        workers = _workers(proxy.pid)
        assert len(workers) == 2
        victim = workers[0]
        _wait(lambda: (directory / f"gauge_livesum_{victim}.db").exists())
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: not list(directory.glob(f"gauge_live*_{victim}.db")))
        assert (directory / f"counter_{victim}.db").exists()
        text = requests.get(f"{proxy.url}/metrics", timeout=10).text  # the other one answers
        assert "hpc_mirror_fills_in_flight 0.0" in text
    finally:
        proxy.stop()
    assert not directory.exists()


def _wait(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)

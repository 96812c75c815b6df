"""`/metrics` read directly from a live `mirror serve` (no Prometheus needed): what each
series counts after real pulls and failures, that the text parses, that its labels stay
bounded and never name a repository, where it is served and that it needs no login."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import requests

from mirror.metrics.exposition import (
    SHARED_DIR_ENV,
    create_workers_directory,
    remove_workers_directory,
)
from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support import oci
from tests.support.accounts import write_htpasswd
from tests.support.clients import fetch_sha256
from tests.support.layers import Entry, image, layer
from tests.support.processes import LOOPBACK, free_port
from tests.support.prometheus import parse_metrics, total
from tests.support.proxy import ProxyProcess, proxy_config, run_mirror, toml_text
from tests.support.seed import RegistryClient, publish_image
from tests.support.sif_pulls import CONTAINER, push_image, sif_name, small_image

ACCEPT = {"Accept": oci.ACCEPT_ALL_MANIFESTS}
LABELS = {"method", "route", "status", "upstream", "result", "outcome", "le", "version", "python"}
SERIES = [
    "requests_total",
    "request_duration_seconds",
    "blob_sent_bytes_total",
    "upstream_requests_total",
    "upstream_received_bytes_total",
    "upstream_retries_total",
    "upstream_breaker_open",
    "fills_in_flight",
    "fill_duration_seconds",
    "herd_followers_total",
    "stale_answers_total",
    "tag_revalidations_total",
    "cache_size_bytes",
    "cache_blobs",
    "conversions_total",
    "conversion_duration_seconds",
    "conversions_in_flight",
    "build_info",
]


def scrape(url: str) -> tuple[str, dict]:
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return response.text, parse_metrics(response.text)


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_pull_is_counted_by_route_and_cache_result_with_bounded_labels(proxy, seeded):
    image = seeded["tools/alpha:1.0"]
    base = f"{proxy.url}/v2/{image.repository}"
    assert requests.get(f"{base}/manifests/1.0", headers=ACCEPT, timeout=10).status_code == 200
    for blob in image.blobs:
        assert requests.get(f"{base}/blobs/{blob['digest']}", timeout=10).status_code == 200
    assert requests.get(f"{base}/blobs/{image.blobs[0]['digest']}", timeout=10).status_code == 200
    made_up = requests.request("PROPFIND", f"{base}/manifests/1.0", timeout=10)
    assert made_up.status_code == 405
    assert requests.get(f"{base}/tags/list", timeout=10).status_code == 200
    assert requests.get(f"{proxy.url}/nowhere", timeout=10).status_code == 404

    text, samples = scrape(proxy.url)
    for name in SERIES:
        assert f"# HELP hpc_mirror_{name.removesuffix('_total')}" in text, name
    requests_total = "hpc_mirror_requests_total"
    assert total(samples, requests_total, method="GET", route="manifest", status="200") == 1
    blobs = len(image.blobs)
    assert total(samples, requests_total, method="GET", route="blob", status="200") == blobs + 1
    assert total(samples, requests_total, method="other", route="manifest", status="405") == 1
    assert total(samples, requests_total, method="GET", route="tags", status="200") == 1
    assert total(samples, requests_total, route="other", status="404") == 1
    sizes = [blob["size"] for blob in image.blobs]
    assert total(samples, "hpc_mirror_blob_sent_bytes_total", result="fill_leader") == sum(sizes)
    assert total(samples, "hpc_mirror_blob_sent_bytes_total", result="hit") == sizes[0]
    upstream_requests = "hpc_mirror_upstream_requests_total"
    assert total(samples, upstream_requests, upstream="test", route="manifest", method="GET") == 1
    assert total(samples, upstream_requests, upstream="test", route="blob", method="GET") == blobs
    assert total(samples, upstream_requests, upstream="test", route="tags", status="200") == 1
    manifest_and_blobs = len(image.manifest) + sum(sizes)
    assert total(samples, "hpc_mirror_upstream_received_bytes_total") > manifest_and_blobs
    assert total(samples, "hpc_mirror_build_info", version="0.1.0") == 1
    # No repository, tag or digest in any label: only bounded sets.
    assert "alpha" not in text and "sha256" not in text
    assert {name for (_, labels) in samples for name, _ in labels} <= LABELS


def test_a_client_that_hangs_up_counts_the_bytes_it_was_sent(proxy, seeded):
    """A cached blob goes out in one sendfile: what counts is what went out before the
    client hung up, not nothing and not the whole blob."""
    image, blob = seeded["big/blob:1.0"], seeded.big_blob
    url = f"{proxy.url}/v2/{image.repository}/blobs/{blob.digest}"
    assert fetch_sha256(url)[0] == 200
    proxy.wait_stored(blob.digest)
    with socket.create_connection((LOOPBACK, proxy.port), timeout=30) as sock:
        sock.sendall(f"GET {url} HTTP/1.1\r\nHost: mirror\r\n\r\n".encode())
        received = b""
        while len(received) < 1 << 20:
            received += sock.recv(1 << 16)
    body_received = len(received.partition(b"\r\n\r\n")[2])  # the counter counts body bytes
    hits = "hpc_mirror_blob_sent_bytes_total"
    _wait_for(lambda: total(scrape(proxy.url)[1], hits, result="hit") > 0)
    sent = total(scrape(proxy.url)[1], hits, result="hit")
    assert body_received <= sent < blob.size


def test_metrics_need_no_login_and_name_no_restricted_repository(
    make_proxy, upstream, seeded, tmp_path
):
    alice = ("alice", "correct horse alice")
    rules = [{"repositories": ["tools/beta"], "access": "restricted", "users": ["alice"]}]
    proxy = make_proxy(
        {"test": upstream_entry(upstream.url, rules=rules)},
        auth={"htpasswd": str(write_htpasswd(tmp_path / "htpasswd", dict([alice])))},
    )
    image = seeded["tools/beta:2.0"]
    url = f"{proxy.url}/v2/{image.repository}/manifests/2.0"
    assert requests.get(url, headers=ACCEPT, timeout=10).status_code == 401
    assert requests.get(url, headers=ACCEPT, auth=alice, timeout=30).status_code == 200
    text, samples = scrape(proxy.url)  # no credentials
    assert total(samples, "hpc_mirror_requests_total", route="manifest", status="401") == 1
    assert total(samples, "hpc_mirror_requests_total", route="manifest", status="200") == 1
    assert "beta" not in text and UPSTREAM_PREFIX not in text


def test_metrics_port_serves_metrics_alone(upstream, seeded, tmp_path):
    config = proxy_config(tmp_path, {"up": upstream_entry(upstream.url)})
    metrics_port = config["server"]["metrics_port"] = free_port()
    with ProxyProcess(tmp_path, config) as proxy:
        assert requests.get(f"{proxy.url}/metrics", timeout=10).status_code == 404
        metrics = f"http://{LOOPBACK}:{metrics_port}"
        _, samples = scrape(metrics)
        assert total(samples, "hpc_mirror_build_info") == 1
        assert requests.get(f"{metrics}/v2/", timeout=10).status_code == 404


def test_a_metrics_port_in_use_is_one_line_and_exit_2(upstream, tmp_path):
    config = proxy_config(tmp_path, {"up": upstream_entry(upstream.url)})
    path = tmp_path / "mirror.toml"
    with socket.create_server((LOOPBACK, 0)) as taken:
        port = config["server"]["metrics_port"] = taken.getsockname()[1]
        path.write_text(toml_text(config))
        result = run_mirror(path, "serve", timeout=60)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot listen on {LOOPBACK}:{port}: Address already in use"]


def test_an_unwell_upstream_counts_no_answers_retries_and_its_open_breaker(make_proxy):
    closed = f"http://{LOOPBACK}:{free_port()}"  # nothing listens there
    proxy = make_proxy(
        {"down": upstream_entry(closed)},
        client={"retries": 1, "breaker_failures": 2, "breaker_cooldown_seconds": 300},
    )
    url = f"{proxy.url}/v2/some/image/manifests/1.0"
    for _ in range(3):  # the third fails at once: the breaker is open
        assert requests.get(url, headers=ACCEPT, timeout=30).status_code == 503
    _, samples = scrape(proxy.url)
    no_answer = dict(upstream="down", method="GET", route="manifest", status="error")
    assert total(samples, "hpc_mirror_upstream_requests_total", **no_answer) == 4
    assert total(samples, "hpc_mirror_upstream_retries_total", upstream="down") == 2
    assert total(samples, "hpc_mirror_upstream_breaker_open", upstream="down") == 1


def test_tag_revalidations_and_stale_answers_are_counted(make_proxy, private_upstream):
    client = RegistryClient(private_upstream.url)
    spec = oci.ImageConfigSpec(title="moving", version="1")
    publish_image(client, "moving/tag", ["stable"], spec, [oci.make_layer("m1", {"a": 9}, "A")])
    proxy = make_proxy({"u": upstream_entry(private_upstream.url)}, tag_ttl_seconds=0.5)
    url = f"{proxy.url}/v2/moving/tag/manifests/stable"

    def pull_after_ttl() -> requests.Response:
        time.sleep(0.6)
        return requests.get(url, headers=ACCEPT, timeout=30)

    def revalidations(outcome: str) -> float:
        samples = scrape(proxy.url)[1]
        return total(samples, "hpc_mirror_tag_revalidations_total", upstream="u", outcome=outcome)

    assert requests.get(url, headers=ACCEPT, timeout=10).status_code == 200  # a first fetch
    assert [revalidations(o) for o in ("unchanged", "moved", "failed")] == [0, 0, 0]
    assert pull_after_ttl().status_code == 200
    assert revalidations("unchanged") == 1
    spec = oci.ImageConfigSpec(title="moving", version="2")
    publish_image(client, "moving/tag", ["stable"], spec, [oci.make_layer("m2", {"b": 9}, "B")])
    client.close()
    assert pull_after_ttl().status_code == 200
    assert revalidations("moved") == 1
    private_upstream.stop()
    assert "Revalidation Failed" in pull_after_ttl().headers["Warning"]
    assert revalidations("failed") == 1
    stale = total(scrape(proxy.url)[1], "hpc_mirror_stale_answers_total", upstream="u")
    assert stale == 1


def test_cache_size_follows_fills_and_gc(proxy, seeded):
    def usage() -> tuple[float, float]:
        samples = scrape(proxy.url)[1]
        return (
            total(samples, "hpc_mirror_cache_size_bytes"),
            total(samples, "hpc_mirror_cache_blobs"),
        )

    def stored() -> tuple[float, float]:
        blobs = proxy.stored_blobs()
        return float(sum(blobs.values())), float(len(blobs))

    _wait_for(lambda: usage() == (0, 0))  # the store read once at start
    image = seeded["tools/beta:2.0"]
    base = f"{proxy.url}/v2/{image.repository}"
    assert requests.get(f"{base}/manifests/2.0", headers=ACCEPT, timeout=10).status_code == 200
    for blob in image.blobs:
        assert requests.get(f"{base}/blobs/{blob['digest']}", timeout=10).status_code == 200
    _wait_for(lambda: usage() == stored() != (0, 0))  # as fills land, no rescan needed

    gc = run_mirror(proxy.config_path, "gc", "--max-size", "0")
    assert gc.returncode == 0, gc.stderr
    assert stored() == (0, 0)
    _wait_for(lambda: usage() == (0, 0))  # another process deleted them: a rescan sees it


def test_the_workers_directory_is_private_fresh_and_removed(tmp_path, monkeypatch):
    monkeypatch.delenv(SHARED_DIR_ENV, raising=False)
    dead = subprocess.Popen(["true"])  # a process id nobody runs now
    dead.wait()
    parent = tmp_path / "metrics"
    (parent / str(dead.pid)).mkdir(parents=True)  # left by a serve that was killed
    (parent / str(os.getppid())).mkdir()  # another serve, still running
    (parent / str(os.getpid())).mkdir()  # this pid's, from before a reboot
    (parent / str(os.getpid()) / "counter_1.db").write_bytes(b"old")

    directory = create_workers_directory(tmp_path)
    assert directory == parent / str(os.getpid())
    assert os.environ[SHARED_DIR_ENV] == str(directory)
    assert list(directory.iterdir()) == []
    assert sorted(p.name for p in parent.iterdir()) == sorted([str(os.getppid()), str(os.getpid())])
    remove_workers_directory(directory)
    assert not directory.exists() and SHARED_DIR_ENV not in os.environ


def _conversion_counts(proxy) -> dict[str, float]:
    samples = scrape(proxy.url)[1]
    counts = {
        outcome: total(samples, "hpc_mirror_conversions_total", outcome=outcome)
        for outcome in ("converted", "refused", "failed", "joined")
    }
    seconds = "hpc_mirror_conversion_duration_seconds_count"
    counts["timed"] = total(samples, seconds)
    counts["timed_converted"] = total(samples, seconds, outcome="converted")
    counts["in_flight"] = total(samples, "hpc_mirror_conversions_in_flight")
    return counts


def _sif_manifest(proxy, repository: str) -> requests.Response:
    url = f"{proxy.url}/v2/{sif_name(repository)}/manifests/1"
    return requests.get(url, headers={"Accept": oci.OCI_MANIFEST}, timeout=120)


def test_conversions_are_counted_by_outcome_and_timed(make_proxy, upstream):
    push_image(upstream.url, "counted/good", "1", small_image("counted"))
    bad = image([layer([Entry("../escape", data=b"x")])])
    push_image(upstream.url, "counted/bad", "1", bad)
    proxy = make_proxy({"u": upstream_entry(upstream.url)})
    nothing = dict.fromkeys(("converted", "refused", "failed", "joined"), 0.0)
    assert _conversion_counts(proxy) == {
        **nothing,
        "timed": 0,
        "timed_converted": 0,
        "in_flight": 0,
    }

    assert _sif_manifest(proxy, "counted/good").status_code == 200
    converted = {**nothing, "converted": 1, "timed": 1, "timed_converted": 1, "in_flight": 0}
    assert _conversion_counts(proxy) == converted
    assert _sif_manifest(proxy, "counted/good").status_code == 200  # a plain hit
    assert _conversion_counts(proxy) == converted

    for _ in range(2):  # the second refusal is remembered: nothing runs again
        assert _sif_manifest(proxy, "counted/bad").status_code == 422
    assert _conversion_counts(proxy) == {**converted, "refused": 1, "timed": 2}
    text = scrape(proxy.url)[0]
    assert "counted" not in text and "sha256" not in text


def test_pulls_that_wait_for_a_running_conversion_count_as_joined(make_proxy, upstream):
    """With `max_wait_seconds = 0` every pull during the conversion gets a 503: the first
    started it, each later one joined it; the pull after it is a hit."""
    slow = image([layer([Entry("data/random", data=os.urandom(8 << 20))], "plain")], CONTAINER)
    push_image(upstream.url, "counted/waited", "1", slow)
    proxy = make_proxy({"u": upstream_entry(upstream.url)}, sif={"max_wait_seconds": 0})
    unavailable = 0
    deadline = time.monotonic() + 120
    while (response := _sif_manifest(proxy, "counted/waited")).status_code == 503:
        unavailable += 1
        assert time.monotonic() < deadline, "the conversion never finished"
        time.sleep(0.05)
    assert response.status_code == 200 and unavailable >= 1

    counts = _conversion_counts(proxy)
    assert counts["converted"] == 1 and counts["joined"] == unavailable - 1

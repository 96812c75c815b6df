"""contrib/haproxy.cfg in front of two `mirror serve` instances over one cache: HAProxy
accepts it as shipped, clients pull through it from both instances, and an instance that
fails its health check gets no new requests while the other serves them."""

import json
import os
import signal
import subprocess

import pytest

from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support.clients import skopeo_copy
from tests.support.haproxy_front import CONTRIB_CONFIG, HAPROXY, HAProxyFront
from tests.support.proxy import ProxyProcess, proxy_config

# The health check the test copy asks for. contrib/haproxy.cfg checks GET /readyz; until
# /readyz is served, the copy checks /v2/ (200 from a mirror without logins). Set this to
# "/readyz" and the copy runs the shipped check unchanged.
CHECK_PATH = "/v2/"


def test_haproxy_accepts_the_config_as_shipped():
    result = subprocess.run(
        [HAPROXY, "-c", "-f", str(CONTRIB_CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def instances(tmp_path, upstream):
    """Two instances on one cache root, as on two login nodes."""
    proxies = []
    for n in (1, 2):
        config = proxy_config(tmp_path / f"node{n}", {"test": upstream_entry(upstream.url)})
        config["cache"]["root"] = str(tmp_path / "shared-cache")
        proxies.append(ProxyProcess(tmp_path / f"node{n}", config))
    try:
        for proxy in proxies:
            proxy.start()
        yield proxies
    finally:
        for proxy in proxies:
            proxy.stop()


def pulled_digest(host: str, reference: str, layout) -> str:
    skopeo_copy(host, reference, f"oci:{layout}:pulled")
    return json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]


def test_clients_pull_through_haproxy_from_both_instances(instances, seeded, tmp_path):
    with HAProxyFront(tmp_path / "haproxy", [p.host for p in instances], CHECK_PATH) as front:
        digest = pulled_digest(front.host, "tools/alpha:1.0", tmp_path / "layout")
    assert digest == seeded["tools/alpha:1.0"].digest
    for proxy in instances:  # leastconn spreads the requests over both
        assert f'"GET /v2/{UPSTREAM_PREFIX}/tools/alpha/' in proxy.log()


def test_an_instance_failing_its_check_gets_no_new_requests(instances, seeded, tmp_path):
    stopped, serving = instances
    with HAProxyFront(tmp_path / "haproxy", [p.host for p in instances], CHECK_PATH) as front:
        os.kill(stopped.pid, signal.SIGSTOP)  # its port still accepts; nothing answers
        try:
            front.wait_log("Server mirrors/node1 is DOWN")
            # Without the check, leastconn would send half the requests to the stopped
            # instance, and the pull would wait for HAProxy's 5-minute server timeout.
            digest = pulled_digest(front.host, "tools/beta:2.0", tmp_path / "layout")
        finally:
            os.kill(stopped.pid, signal.SIGCONT)
        front.wait_log("Server mirrors/node1 is UP")  # it answers again: back in
    assert digest == seeded["tools/beta:2.0"].digest
    assert f'"GET /v2/{UPSTREAM_PREFIX}/tools/beta/' in serving.log()
    assert "tools/beta" not in stopped.log()

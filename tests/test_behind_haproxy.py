"""contrib/haproxy.cfg in front of two `mirror serve` instances over one cache: HAProxy
accepts it as shipped; clients pull through it from both instances, over plain HTTP and with
TLS ending at HAProxy (README, "Behind HAProxy"); an instance failing its health check gets
no new requests while the other serves them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support.clients import Podman, skopeo_copy
from tests.support.haproxy import CONTRIB_CONFIG, HAPROXY, HAProxyProcess
from tests.support.proxy import ProxyProcess, proxy_config


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


def pulled_digest(host: str, reference: str, layout: Path, cert_dir: Path | None = None) -> str:
    skopeo_copy(host, reference, f"oci:{layout}:pulled", cert_dir=cert_dir)
    return json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]


def test_clients_pull_through_haproxy_from_both_instances(instances, seeded, tmp_path):
    with HAProxyProcess(tmp_path / "haproxy", [p.host for p in instances]) as haproxy:
        digest = pulled_digest(haproxy.host, "tools/alpha:1.0", tmp_path / "layout")
    assert digest == seeded["tools/alpha:1.0"].digest
    for proxy in instances:  # leastconn spreads the requests over both
        assert f'"GET /v2/{UPSTREAM_PREFIX}/tools/alpha/' in proxy.log()


def test_clients_pull_over_https_with_tls_ending_at_haproxy(
    instances, seeded, listener_ca, tmp_path
):
    hosts = [proxy.host for proxy in instances]
    with HAProxyProcess(tmp_path / "haproxy", hosts, ca=listener_ca) as haproxy:
        cert_dir = listener_ca.cert_dir(tmp_path / "certs")
        digest = pulled_digest(haproxy.host, "tools/alpha:1.0", tmp_path / "layout", cert_dir)
        assert digest == seeded["tools/alpha:1.0"].digest
        with Podman(tmp_path / "podman", ca_file=listener_ca.ca_file) as podman:
            digest = podman.pull(f"{haproxy.host}/{UPSTREAM_PREFIX}/tools/beta:2.0")
        assert digest == seeded["tools/beta:2.0"].digest
    for proxy in instances:
        assert f'"GET /v2/{UPSTREAM_PREFIX}/tools/' in proxy.log()


def test_an_instance_failing_its_check_gets_no_new_requests(instances, seeded, tmp_path):
    stopped, serving = instances
    with HAProxyProcess(tmp_path / "haproxy", [p.host for p in instances]) as haproxy:
        os.kill(stopped.pid, signal.SIGSTOP)  # its port still accepts; nothing answers
        try:
            haproxy.wait_log("Server mirrors/node1 is DOWN")
            # Without the check, leastconn would send half the requests to the stopped
            # instance, and the pull would wait for HAProxy's 5-minute server timeout.
            digest = pulled_digest(haproxy.host, "tools/beta:2.0", tmp_path / "layout")
        finally:
            os.kill(stopped.pid, signal.SIGCONT)
        haproxy.wait_log("Server mirrors/node1 is UP")  # it answers again: back in
    assert digest == seeded["tools/beta:2.0"].digest
    assert f'"GET /v2/{UPSTREAM_PREFIX}/tools/beta/' in serving.log()
    assert "tools/beta" not in stopped.log()

"""A site that terminates TLS at HAProxy in front of several `mirror serve` instances over
one cache (README, "Behind HAProxy"): clients pull over HTTPS trusting the site CA."""

from __future__ import annotations

from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support.clients import Podman, skopeo_copy
from tests.support.haproxy import HAProxyProcess
from tests.support.proxy import ProxyProcess, proxy_config


def test_clients_pull_over_https_through_haproxy_from_every_instance(
    upstream, seeded, listener_ca, tmp_path
):
    instances = []
    for n in (1, 2):
        config = proxy_config(tmp_path / f"node{n}", {"test": upstream_entry(upstream.url)})
        config["cache"]["root"] = str(tmp_path / "shared-cache")
        instances.append(ProxyProcess(tmp_path / f"node{n}", config))
    try:
        for proxy in instances:
            proxy.start()
        with HAProxyProcess(
            tmp_path / "haproxy", listener_ca, [proxy.host for proxy in instances]
        ) as haproxy:
            cert_dir = listener_ca.cert_dir(tmp_path / "certs")
            dest = tmp_path / "layout"
            skopeo_copy(haproxy.host, "tools/alpha:1.0", f"oci:{dest}:x", cert_dir=cert_dir)
            with Podman(tmp_path / "podman", ca_file=listener_ca.ca_file) as podman:
                digest = podman.pull(f"{haproxy.host}/{UPSTREAM_PREFIX}/tools/beta:2.0")
            assert digest == seeded["tools/beta:2.0"].digest
    finally:
        for proxy in instances:
            proxy.stop()
    for proxy in instances:  # leastconn spreads the requests over both instances
        assert f'"GET /v2/{UPSTREAM_PREFIX}/tools/' in proxy.log()

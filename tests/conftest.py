"""Fixtures: a real upstream registry (Debian's docker-registry) seeded over its HTTP API,
and `mirror serve` processes in front of it on free loopback ports."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support.catalog_cache import filled, site  # noqa: F401 (session fixtures)
from tests.support.gluster import GlusterVolume
from tests.support.local_catalog import local_catalog  # noqa: F401 (a fixture)
from tests.support.proxy import UPSTREAM_PREFIX, ProxyProcess, proxy_config, upstream_entry
from tests.support.registry import RegistryProcess
from tests.support.seed import RegistryClient, Seeded, seed_all
from tests.support.tls import LoopbackCA, make_loopback_ca

__all__ = ["UPSTREAM_PREFIX", "upstream_entry"]  # the tests import both from here

# Property tests check what happens, not how fast: on a loaded 2-core CI machine a
# per-example deadline or a "generation is slow" check only adds failures that say nothing
# about the code.
settings.register_profile(
    "hpc-mirror",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("hpc-mirror")


@pytest.fixture(scope="session")
def upstream() -> RegistryProcess:
    """One seeded anonymous upstream for the session. Tests that stop an upstream make
    their own (see `private_upstream`)."""
    with RegistryProcess() as registry:
        yield registry


@pytest.fixture(scope="session")
def seeded(upstream: RegistryProcess) -> Seeded:
    client = RegistryClient(upstream.url)
    try:
        return seed_all(client)
    finally:
        client.close()


@pytest.fixture(scope="session")
def gluster_mounts(tmp_path_factory):
    with GlusterVolume(tmp_path_factory.mktemp("gluster")) as mounts:
        yield mounts


@pytest.fixture(params=["local", "glusterfs"])
def cache_roots(request, tmp_path):
    """Where two instances find the one cache: the same local directory, or the same
    directory seen through two GlusterFS mounts (like two nodes)."""
    if request.param == "local":
        return tmp_path / "shared", tmp_path / "shared"
    node_a, node_b = request.getfixturevalue("gluster_mounts")
    return node_a / tmp_path.name, node_b / tmp_path.name


@pytest.fixture
def make_proxy(tmp_path: Path):
    """Build and start proxies; each is stopped (by its own PID) after the test."""
    started: list[ProxyProcess] = []

    def make(
        upstreams: dict,
        *,
        env: dict | None = None,
        name: str = "proxy",
        client: dict | None = None,
        launcher: tuple[str, ...] = (),
        auth: dict | None = None,
        log_level: str = "info",
        listener_ca: LoopbackCA | None = None,
        server: dict | None = None,
        log: dict | None = None,
        args: tuple[str, ...] = (),
        sif: dict | None = None,
        local: dict | None = None,
        **cache,
    ) -> ProxyProcess:
        workdir = tmp_path / f"{name}-{len(started)}"
        config = proxy_config(workdir, upstreams, **cache)
        config["client"].update(client or {})
        config["server"].update(server or {})
        if log is not None:
            config["log"] = log
        if auth is not None:
            config["auth"] = auth
        if sif is not None:
            config["sif"] = sif
        if local is not None:  # the `[local]` table: the site's own namespace
            config["local"] = local
        proxy = ProxyProcess(
            workdir,
            config,
            env=env,
            launcher=launcher,
            log_level=log_level,
            listener_ca=listener_ca,
            args=args,
        )
        started.append(proxy)
        return proxy.start()

    yield make
    for proxy in started:
        proxy.stop()


@pytest.fixture
def proxy(make_proxy, upstream: RegistryProcess, seeded: Seeded) -> ProxyProcess:
    """A fresh proxy (empty cache) whose default upstream is the seeded registry."""
    return make_proxy({"test": upstream_entry(upstream.url)})


@pytest.fixture
def listener_ca(tmp_path: Path) -> LoopbackCA:
    """A CA of the test's own and a certificate from it for a proxy's listener."""
    return make_loopback_ca(tmp_path / "listener-ca")


@pytest.fixture
def tls_proxy(make_proxy, upstream: RegistryProcess, seeded: Seeded, listener_ca) -> ProxyProcess:
    """Like `proxy`, serving HTTPS with `listener_ca`'s certificate (`[server] tls_cert`)."""
    return make_proxy({"test": upstream_entry(upstream.url)}, listener_ca=listener_ca)


@pytest.fixture
def private_upstream(tmp_path: Path) -> RegistryProcess:
    """An upstream this test alone uses, so it may stop or restart it."""
    with RegistryProcess(workdir=tmp_path / "registry") as registry:
        yield registry

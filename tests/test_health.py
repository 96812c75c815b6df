"""`/healthz` and `/readyz` of a real `mirror serve`, asked without credentials as HAProxy
and systemd ask: ready only while the store and the metadata index take writes and the
process is not shutting down; each reason is said in the answer and, once, in the log."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
import requests
from aiohttp.test_utils import TestClient, TestServer

from mirror import config as config_module
from mirror.proxy.app import create_app
from mirror.proxy.health import READINESS
from tests.conftest import upstream_entry
from tests.support.accounts import write_htpasswd
from tests.test_full_disk import fill_up


@pytest.fixture
def small_mounts(tmp_path: Path):
    """Two tmpfs of 8 MiB: one for the store, one for the index. Request it before
    `make_proxy`, so the proxies on them stop before they are unmounted."""
    mounts = [tmp_path / "store-fs", tmp_path / "index-fs"]
    for mount in mounts:
        mount.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    yield mounts
    for mount in mounts:
        subprocess.run(["umount", str(mount)], check=True)


def _remount(mount: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True)


def _readyz(proxy) -> tuple[int, str]:
    response = requests.get(f"{proxy.url}/readyz", timeout=30)
    return response.status_code, response.text


def test_probes_need_no_credentials_on_a_mirror_with_logins(make_proxy, upstream, tmp_path):
    auth = {"htpasswd": str(write_htpasswd(tmp_path / "htpasswd", {"alice": "pw-alice-1"}))}
    proxy = make_proxy({"test": upstream_entry(upstream.url, access="authenticated")}, auth=auth)
    assert requests.get(f"{proxy.url}/v2/", timeout=30).status_code == 401
    healthz = requests.get(f"{proxy.url}/healthz", timeout=30)
    assert (healthz.status_code, healthz.text) == (200, "ok\n")
    assert _readyz(proxy) == (200, "ready\n")
    assert requests.head(f"{proxy.url}/readyz", timeout=30).status_code == 200
    assert "/healthz" not in proxy.log() and "/readyz" not in proxy.log()


def test_not_ready_while_the_store_is_full_or_read_only(small_mounts, make_proxy, upstream):
    store_fs, _ = small_mounts
    proxy = make_proxy({"test": upstream_entry(upstream.url)}, root=str(store_fs / "cache"))
    assert _readyz(proxy) == (200, "ready\n")
    filler = fill_up(store_fs)
    status, text = _readyz(proxy)
    assert status == 503
    assert text == "not ready: the store does not take writes: No space left on device\n"
    assert _readyz(proxy)[0] == 503
    log = proxy.log()
    assert log.count("not ready: the store does not take writes") == 1  # said once
    assert "refuses writes: ENOSPC" in log and "writing a readiness probe" in log
    assert requests.get(f"{proxy.url}/healthz", timeout=30).status_code == 200
    filler.unlink()
    assert _readyz(proxy) == (200, "ready\n")
    _remount(store_fs, "ro")
    try:
        assert _readyz(proxy) == (
            503,
            "not ready: the store does not take writes: Read-only file system\n",
        )
    finally:
        _remount(store_fs, "rw")
    assert _readyz(proxy) == (200, "ready\n")
    assert proxy.log().count("ready again") == 2


def test_not_ready_while_the_metadata_index_cannot_be_written(small_mounts, make_proxy, upstream):
    _, index_fs = small_mounts
    proxy = make_proxy({"test": upstream_entry(upstream.url)}, index_dir=str(index_fs / "index"))
    assert _readyz(proxy) == (200, "ready\n")
    filler = fill_up(index_fs)
    assert _readyz(proxy) == (
        503,
        "not ready: the metadata index is unusable: database or disk is full\n",
    )
    filler.unlink()
    assert _readyz(proxy) == (200, "ready\n")


def test_a_draining_mirror_is_not_ready(tmp_path, upstream):
    config = config_module.load(
        None,
        {
            "cache": {"root": str(tmp_path / "cache"), "index_dir": str(tmp_path / "index")},
            "upstreams": {"test": upstream_entry(upstream.url)},
        },
    )

    async def probe() -> list[tuple[int, str]]:
        app = create_app(config)
        async with TestClient(TestServer(app)) as client:
            answers = []
            for drain in (False, True):
                if drain:
                    app[READINESS].drain()
                async with client.get("/readyz") as response:
                    answers.append((response.status, await response.text()))
            return answers

    assert asyncio.run(probe()) == [
        (200, "ready\n"),
        (503, "not ready: draining: the mirror is shutting down\n"),
    ]

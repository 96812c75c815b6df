"""One conversion per image across every instance: two `mirror serve` processes over one
cache (a local directory, and one GlusterFS volume mounted twice, like two nodes), a herd
of pulls on both, one conversion; a converter killed mid-conversion is taken over."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import upstream_entry
from tests.support.layers import Entry, image, layer
from tests.support.sif_pulls import CONTAINER, converted_directly, push_image, sif_name


def _pair(make_proxy, upstream, cache_roots, **options):
    upstreams = {"u": upstream_entry(upstream.url)}
    # Allow for the ~1 s attribute lag of a network filesystem in the heartbeat.
    return [
        make_proxy(upstreams, name=node, root=str(root), fill_stale_seconds=4, **options)
        for node, root in zip(("node-a", "node-b"), cache_roots)
    ]


def _pull_sif(proxy, name: str, tag: str) -> tuple[int, str]:
    """GET the SIF manifest, then its SIF; the status and the SIF's sha256."""
    base = f"{proxy.url}/v2/{name}"
    manifest = requests.get(f"{base}/manifests/{tag}", timeout=600)
    if manifest.status_code != 200:
        return manifest.status_code, manifest.text
    layer_digest = manifest.json()["layers"][0]["digest"]
    blob = requests.get(f"{base}/blobs/{layer_digest}", timeout=600)
    return blob.status_code, "sha256:" + hashlib.sha256(blob.content).hexdigest()


def _conversions(*proxies) -> int:
    return sum(p.log().count("INFO mirror.proxy.conversions: converting ") for p in proxies)


def _random_image(size: int):
    return image([layer([Entry("data/random", data=os.urandom(size))], "plain")], CONTAINER)


def test_a_herd_on_two_instances_converts_once(make_proxy, upstream, cache_roots):
    built = _random_image(8 << 20)
    push_image(upstream.url, "herd/image", "1", built)
    first, second = _pair(make_proxy, upstream, cache_roots)
    name = sif_name("herd/image")

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda p: _pull_sif(p, name, "1"), [first, second] * 8))

    assert len(set(results)) == 1 and results[0][0] == 200, results
    assert _conversions(first, second) == 1
    records = list((first.cache_root / "conversions").rglob("*"))
    assert [p.name for p in records if p.is_file()] == [built.digest.hex]
    assert not [p for p in first.temp_files() if p.name.startswith("conversion-")]


def test_a_killed_converter_is_taken_over(make_proxy, upstream, tmp_path: Path, cache_roots):
    # xz over incompressible data: a conversion slow enough to be killed in the middle.
    built = _random_image(24 << 20)
    push_image(upstream.url, "herd/killed", "1", built)
    first, second = _pair(make_proxy, upstream, cache_roots, sif={"compression": "xz"})
    name = sif_name("herd/killed")

    with ThreadPoolExecutor(1) as pool:
        victim = pool.submit(_pull_sif, first, name, "1")
        first.wait_log("converting up.test/herd/killed", timeout=120)
        first._process.kill()  # SIGKILL, mid-conversion
        with pytest.raises(requests.ConnectionError):
            victim.result()
    status, sif_digest = _pull_sif(second, name, "1")

    assert status == 200
    assert "taking over the conversion of up.test/herd/killed" in second.log()
    direct = converted_directly(
        second.cache_root, "herd/killed", built.digest, tmp_path / "d.sif", compression="xz"
    )
    assert sif_digest == str(direct.digest)
    leftovers = [p.name for p in second.temp_files() if p.name.startswith("conversion-")]
    assert leftovers == []

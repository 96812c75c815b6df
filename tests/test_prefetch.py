"""`mirror prefetch`: fill the cache without a client, then serve it with the upstream gone."""

from __future__ import annotations

import json

import requests

from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support.clients import oras_pull, skopeo_copy
from tests.support.conversion import siftool
from tests.support.proxy import ProxyProcess, proxy_config, run_mirror, toml_text
from tests.support.registry import RegistryProcess, free_port
from tests.support.seed import RegistryClient, seed_all
from tests.support.sif_pulls import push_index, small_image

IMAGES = ["tools/alpha:1.0", "multi/app:1.0", "legacy/dockerimg:v2", "sif/tool:1.0", "big/blob:1.0"]


def _config(tmp_path, registry_url: str) -> tuple[dict, object]:
    config = proxy_config(tmp_path, {"u": upstream_entry(registry_url)})
    path = tmp_path / "mirror.toml"
    path.write_text(toml_text(config))
    return config, path


def _prefetch(config_path, *args: str):
    return run_mirror(config_path, "prefetch", *args)


def test_prefetch_then_serve_with_the_upstream_stopped(tmp_path):
    with RegistryProcess(workdir=tmp_path / "registry") as registry:
        client = RegistryClient(registry.url)
        seeded = seed_all(client)
        client.close()
        config, path = _config(tmp_path, registry.url)
        listing = tmp_path / "images.txt"
        listing.write_text(
            "# site images\n"
            + "\n".join(f"{UPSTREAM_PREFIX}/{image}" for image in IMAGES[:3])
            + "\n"
        )
        first = _prefetch(path, "--file", str(listing), f"{UPSTREAM_PREFIX}/{IMAGES[3]}", IMAGES[4])
        assert first.returncode == 0, first.stderr
        assert "prefetch" in first.stderr and "failed" not in first.stderr
        blob_gets = registry.count("GET", "/blobs/")
        expected_blobs = {
            b["digest"]
            for image in IMAGES
            for i in [seeded[image]]
            for m in [i, *i.children]
            for b in m.blobs
        }
        assert blob_gets == len(expected_blobs)
        since = registry.mark()
        again = _prefetch(path, "--file", str(listing), f"{UPSTREAM_PREFIX}/{IMAGES[3]}", IMAGES[4])
        assert again.returncode == 0, again.stderr
        assert registry.count("GET", "/blobs/", since=since) == 0  # resumable: nothing missing
    # upstream gone: real clients pull from the prefetched cache
    config["server"]["port"] = free_port()
    with ProxyProcess(tmp_path / "serve", config) as proxy:
        dest = tmp_path / "layout"
        skopeo_copy(proxy.host, "multi/app:1.0", f"oci:{dest}:x", "--all")
        files = oras_pull(proxy.host, "sif/tool:1.0", tmp_path / "sif")
        assert open(files[0], "rb").read() == seeded["sif/tool:1.0"].sif.data
        big = seeded["big/blob:1.0"]
        response = requests.get(
            f"{proxy.url}/v2/big/blob/blobs/{big.layers[0]['digest']}", timeout=60
        )
        assert response.status_code == 200 and len(response.content) == big.layers[0]["size"]


def test_platform_filter_and_failures_are_reported(upstream, seeded, tmp_path):
    _, path = _config(tmp_path, upstream.url)
    result = _prefetch(
        path,
        "--platform",
        "linux/arm64",
        f"{UPSTREAM_PREFIX}/multi/app:1.0",
        f"{UPSTREAM_PREFIX}/does/not-exist:1.0",
    )
    assert result.returncode == 1
    assert "failed up.test/does/not-exist:1.0: MANIFEST_UNKNOWN" in result.stderr
    index = seeded["multi/app:1.0"]
    platforms = {
        entry["digest"]: entry["platform"]["architecture"]
        for entry in json.loads(index.manifest)["manifests"]
    }
    cached = {p.name for p in (tmp_path / "cache" / "blobs" / "sha256").glob("*/*")}
    for child in index.children:
        blobs = {b["digest"][7:] for b in child.blobs}
        if platforms[child.digest] == "arm64":
            assert blobs <= cached
        else:  # its config is its own: never fetched for another platform
            assert child.config["digest"][7:] not in cached


def test_a_platform_no_index_holds_is_reported(upstream, seeded, tmp_path):
    _, path = _config(tmp_path, upstream.url)
    result = _prefetch(path, "--platform", "plan9/mips", f"{UPSTREAM_PREFIX}/multi/app:1.0")
    assert result.returncode == 1
    assert "MANIFEST_UNKNOWN: no manifest for platform plan9/mips" in " ".join(
        result.stderr.split()
    )


def test_prefetch_sif_converts_after_caching(upstream, tmp_path):
    push_index(
        upstream.url,
        "prefetched/multi",
        "1",
        {
            "linux/amd64": small_image("amd64"),
            "linux/arm64": small_image("arm", architecture="arm64"),
        },
    )
    config, path = _config(tmp_path, upstream.url)
    result = _prefetch(
        path,
        "--sif",
        f"{UPSTREAM_PREFIX}/prefetched/multi:1",
        f"sif-linux-arm64/{UPSTREAM_PREFIX}/prefetched/multi:1",  # a SIF name converts too
    )
    assert result.returncode == 0, result.stderr
    for image, sif in [
        (f"{UPSTREAM_PREFIX}/prefetched/multi:1", f"sif/{UPSTREAM_PREFIX}/prefetched/multi:1"),
        (f"sif-linux-arm64/{UPSTREAM_PREFIX}/prefetched/multi:1",) * 2,
    ]:
        assert f"converted {image} to the SIF {sif}\n" in result.stderr
    records = [p for p in (tmp_path / "cache" / "conversions").rglob("*") if p.is_file()]
    assert len(records) == 2
    # Served as prefetched: nothing is converted when it is pulled.
    config["server"]["port"] = free_port()
    with ProxyProcess(tmp_path / "serve", config) as proxy:
        for namespace, arch in (("sif", "amd64"), ("sif-linux-arm64", "arm64")):
            outdir = tmp_path / namespace
            [pulled] = oras_pull(
                proxy.host, "prefetched/multi:1", outdir, under=f"{namespace}/{UPSTREAM_PREFIX}"
            )
            assert f"Primary Architecture: {arch}" in siftool("header", pulled)
        assert "converting" not in proxy.log()

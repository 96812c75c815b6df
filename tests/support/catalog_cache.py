"""A cache filled by real pulls through the proxy, for the catalog tests: every seeded
kind plus images a catalog must render safely (scripts in labels, damaged content)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from mirror import config as config_module
from mirror.catalog.render import render

from . import oci
from .clients import oras_pull, skopeo_copy
from .proxy import ProxyProcess, proxy_config, upstream_entry
from .seed import RegistryClient, publish, publish_image

XSS = "<script>window.__xss = 1</script>"
DAMAGED = ("bad/config:1.0", "bad/sif:1.0")


def _seed_hostile_and_damaged(upstream_url: str, tmp: Path) -> dict:
    """Images a catalog must render safely: script in labels, unparsable config, a SIF
    layer that is not a SIF, and a SIF with a script in its definition file."""
    client = RegistryClient(upstream_url)
    try:
        spec = oci.ImageConfigSpec(
            title=XSS, version="1", description=XSS, extra_labels=(("evil", XSS),)
        )
        [hostile] = publish_image(
            client, "hostile/labels", ["1.0"], spec, [oci.make_layer("hostile", {"x": 10}, XSS)]
        )
        config = b"{not json"
        config_desc = oci.descriptor_for(oci.OCI_CONFIG, config)
        layer = b"layer"
        layer_desc = oci.descriptor_for(oci.OCI_LAYER_TAR, layer)
        manifest = oci.image_manifest(oci.OCI_MANIFEST, config_desc, [layer_desc])
        publish(
            client,
            "bad/config",
            ["1.0"],
            oci.OCI_MANIFEST,
            manifest,
            [(config_desc, config), (layer_desc, layer)],
        )
        not_sif = b"\x00" * 100 + b"definitely not a SIF"
        sif_desc = oci.descriptor_for(oci.SIF_LAYER, not_sif)
        empty = oci.descriptor_for(oci.SIF_CONFIG, b"{}")
        manifest = oci.image_manifest(oci.OCI_MANIFEST, empty, [sif_desc])
        publish(
            client,
            "bad/sif",
            ["1.0"],
            oci.OCI_MANIFEST,
            manifest,
            [(empty, b"{}"), (sif_desc, not_sif)],
        )
    finally:
        client.close()
    return {"hostile": hostile}


def _pull_all(proxy: ProxyProcess, seeded, tmp: Path) -> None:
    """Real clients through the proxy: skopeo for images, the oras SDK for SIFs, plain
    HTTP for what those tools do not fetch whole."""
    for reference, dest, extra in (
        ("tools/alpha:1.0", "oci:{}:x", []),
        ("multi/app:1.0", "oci:{}:x", ["--all"]),
        ("legacy/dockerimg:v2", "dir:{}", []),
        ("hostile/labels:1.0", "oci:{}:x", []),
    ):
        target = dest.format(tmp / reference.replace("/", "_").replace(":", "_"))
        skopeo_copy(proxy.host, reference, target, *extra)
    for reference in ("sif/tool:1.0", "sif/legacy:oras-go-v1", "sif/zeroconfig:3.7"):
        oras_pull(proxy.host, reference, tmp / "oras")
    accept = {"Accept": oci.ACCEPT_ALL_MANIFESTS}
    for reference in ("tools/alpha:latest", "tools/beta:2.0") + DAMAGED:
        repository, tag = reference.split(":")
        body = requests.get(
            f"{proxy.url}/v2/{repository}/manifests/{tag}", headers=accept, timeout=30
        ).json()
        for blob in [body["config"]] + body["layers"]:
            requests.get(f"{proxy.url}/v2/{repository}/blobs/{blob['digest']}", timeout=30)


@pytest.fixture(scope="session")
def filled(upstream, seeded, tmp_path_factory):
    """A cache filled by real pulls, with the proxy stopped (so nothing changes)."""
    work = tmp_path_factory.mktemp("catalog")
    extra = _seed_hostile_and_damaged(upstream.url, work)
    proxy = ProxyProcess(
        work / "proxy", proxy_config(work / "proxy", {"test": upstream_entry(upstream.url)})
    )
    with proxy:
        _pull_all(proxy, seeded, work)
        requests.get(
            f"{proxy.url}/v2/tools/alpha/manifests/1.0",
            headers={"Accept": oci.ACCEPT_ALL_MANIFESTS},
            timeout=30,
        )
    cfg = config_module.load(proxy.config_path, {"catalog": {"mirror_url": "mirror.site:5000"}})
    return cfg, seeded, extra


@pytest.fixture(scope="session")
def site(filled, tmp_path_factory):
    cfg, _, _ = filled
    out = tmp_path_factory.mktemp("site") / "site"
    report = render(cfg, out)
    assert report.repositories >= 10
    return out

"""`mirror render` over a cache that real pulls through the proxy filled."""

from __future__ import annotations

import hashlib
import html
import json
import subprocess
import sys
from pathlib import Path

import oras.client
import pytest
import requests

from mirror import config as config_module
from mirror.catalog import render
from tests.conftest import UPSTREAM_PREFIX
from tests.support import oci
from tests.support.proxy import ProxyProcess, proxy_config, toml_text
from tests.support.seed import RegistryClient, publish, publish_image
from tests.support.sifwriter import example_sif, make_squashfs

XSS = '<script>window.__xss = 1</script>'
DAMAGED = ("bad/config:1.0", "bad/sif:1.0")


def _seed_hostile_and_damaged(upstream_url: str, tmp: Path) -> dict:
    """Images a catalog must render safely: script in labels, unparsable config, a SIF
    layer that is not a SIF, and a SIF with a script in its definition file."""
    client = RegistryClient(upstream_url)
    try:
        spec = oci.ImageConfigSpec(title=XSS, version="1", description=XSS,
                                   extra_labels=(("evil", XSS),))
        [hostile] = publish_image(client, "hostile/labels", ["1.0"], spec,
                                  [oci.make_layer("hostile", {"x": 10}, XSS)])
        config = b"{not json"
        config_desc = oci.descriptor_for(oci.OCI_CONFIG, config)
        layer = b"layer"
        layer_desc = oci.descriptor_for(oci.OCI_LAYER_TAR, layer)
        manifest = oci.image_manifest(oci.OCI_MANIFEST, config_desc, [layer_desc])
        publish(client, "bad/config", ["1.0"], oci.OCI_MANIFEST, manifest,
                [(config_desc, config), (layer_desc, layer)])
        not_sif = b"\x00" * 100 + b"definitely not a SIF"
        sif_desc = oci.descriptor_for(oci.SIF_LAYER, not_sif)
        empty = oci.descriptor_for(oci.SIF_CONFIG, b"{}")
        manifest = oci.image_manifest(oci.OCI_MANIFEST, empty, [sif_desc])
        publish(client, "bad/sif", ["1.0"], oci.OCI_MANIFEST, manifest,
                [(empty, b"{}"), (sif_desc, not_sif)])
    finally:
        client.close()
    return {"hostile": hostile}


def _pull_all(proxy: ProxyProcess, seeded, tmp: Path) -> None:
    """Real clients through the proxy: skopeo for images, the oras SDK for SIFs, plain
    HTTP for what those tools do not fetch whole."""
    prefix = f"{proxy.host}/{UPSTREAM_PREFIX}"
    for reference, dest, extra in (("tools/alpha:1.0", "oci:{}:x", []),
                                   ("multi/app:1.0", "oci:{}:x", ["--all"]),
                                   ("legacy/dockerimg:v2", "dir:{}", []),
                                   ("hostile/labels:1.0", "oci:{}:x", [])):
        target = dest.format(tmp / reference.replace("/", "_").replace(":", "_"))
        subprocess.run(["skopeo", "copy", "--preserve-digests", "--src-tls-verify=false", *extra,
                        f"docker://{prefix}/{reference}", target], check=True,
                       capture_output=True, timeout=120)
    client = oras.client.OrasClient(hostname=proxy.host, insecure=True)
    for reference in ("sif/tool:1.0", "sif/legacy:oras-go-v1", "sif/zeroconfig:3.7"):
        client.pull(target=f"{prefix}/{reference}", outdir=str(tmp / "oras"))
    accept = {"Accept": oci.ACCEPT_ALL_MANIFESTS}
    for reference in ("tools/alpha:latest", "tools/beta:2.0") + DAMAGED:
        repository, tag = reference.split(":")
        body = requests.get(f"{proxy.url}/v2/{repository}/manifests/{tag}", headers=accept,
                            timeout=30).json()
        for blob in [body["config"]] + body["layers"]:
            requests.get(f"{proxy.url}/v2/{repository}/blobs/{blob['digest']}", timeout=30)


@pytest.fixture(scope="module")
def filled(upstream, seeded, tmp_path_factory):
    """A cache filled by real pulls, with the proxy stopped (so nothing changes)."""
    work = tmp_path_factory.mktemp("catalog")
    extra = _seed_hostile_and_damaged(upstream.url, work)
    proxy = ProxyProcess(work / "proxy", proxy_config(
        work / "proxy", {"test": {"url": upstream.url, "prefix": UPSTREAM_PREFIX,
                                  "default": True}}))
    with proxy:
        _pull_all(proxy, seeded, work)
        requests.get(f"{proxy.url}/v2/tools/alpha/manifests/1.0",
                     headers={"Accept": oci.ACCEPT_ALL_MANIFESTS}, timeout=30)
    cfg = config_module.load(proxy.config_path, {"catalog": {"mirror_url": "mirror.site:5000"}})
    return cfg, seeded, extra


@pytest.fixture(scope="module")
def site(filled, tmp_path_factory):
    cfg, _, _ = filled
    out = tmp_path_factory.mktemp("site") / "site"
    report = render(cfg, out)
    assert report.repositories >= 10
    return out


def _page(site: Path, repository: str, digest: str, *, raw: bool = False) -> str:
    """A manifest's page; unescaped (as a reader sees the text) unless `raw`."""
    text = (site / "r" / UPSTREAM_PREFIX / repository / f"sha256-{digest.split(':')[1]}.html"
            ).read_text()
    return text if raw else html.unescape(text)


def test_index_lists_every_repository_grouped_by_upstream(site, seeded):
    index = (site / "index.html").read_text()
    assert f"<h2>{UPSTREAM_PREFIX}</h2>" in index
    for repository in ("tools/alpha", "tools/beta", "multi/app", "legacy/dockerimg", "sif/tool",
                       "sif/legacy", "sif/zeroconfig", "hostile/labels"):
        assert f'href="r/{UPSTREAM_PREFIX}/{repository}/index.html"' in index
    catalog = json.loads((site / "catalog.json").read_text())
    rows = {row["path"]: row for row in catalog["repositories"]}
    assert rows[f"{UPSTREAM_PREFIX}/tools/alpha"]["tags"] == ["1.0", "latest"]
    assert rows[f"{UPSTREAM_PREFIX}/multi/app"]["kinds"] == ["multi-arch index"]
    assert rows[f"{UPSTREAM_PREFIX}/multi/app"]["platforms"] == ["linux/amd64", "linux/arm64"]
    assert rows[f"{UPSTREAM_PREFIX}/sif/tool"]["kinds"] == ["SIF"]
    assert rows[f"{UPSTREAM_PREFIX}/sif/tool"]["signed"] is True
    assert rows[f"{UPSTREAM_PREFIX}/tools/alpha"]["pulls"] >= 1
    alpha = seeded["tools/alpha:1.0"]
    assert rows[f"{UPSTREAM_PREFIX}/tools/alpha"]["size"] == sum(b["size"] for b in alpha.blobs)


def test_repository_page_has_pull_commands_and_snippets(site, seeded):
    page = (site / "r" / UPSTREAM_PREFIX / "sif" / "tool" / "index.html").read_text()
    image = seeded["sif/tool:1.0"]
    assert f"apptainer pull --no-https oras://mirror.site:5000/{UPSTREAM_PREFIX}/sif/tool:1.0" in page
    assert f"oras://mirror.site:5000/{UPSTREAM_PREFIX}/sif/tool@{image.digest}" in page
    assert "[[registry.mirror]]" in page and 'capabilities = [&#34;pull&#34;' in page
    oci_page = (site / "r" / UPSTREAM_PREFIX / "tools" / "beta" / "index.html").read_text()
    assert f"podman pull --tls-verify=false mirror.site:5000/{UPSTREAM_PREFIX}/tools/beta:2.0" in oci_page
    assert f"apptainer pull --no-https docker://mirror.site:5000/{UPSTREAM_PREFIX}/tools/beta:2.0" in oci_page


def test_oci_image_page_shows_config_layers_and_history(site, seeded):
    image = seeded["tools/alpha:1.0"]
    page = _page(site, "tools/alpha", image.digest)
    config = json.loads(image.blob_data[image.config["digest"]])
    for label, value in config["config"]["Labels"].items():
        assert label in page and value in page
    for variable in config["config"]["Env"]:
        assert variable in page
    assert json.dumps(config["config"]["Entrypoint"]) in page or \
        "/opt/alpha/bin/alpha" in page
    for step in config["history"]:
        assert step["created_by"] in page
    for layer in image.layers:
        assert layer["digest"].split(":")[1][:12] in page
    assert image.config["mediaType"] in page


def test_index_page_lists_platforms(site, seeded):
    index = seeded["multi/app:1.0"]
    page = _page(site, "multi/app", index.digest)
    assert "linux/amd64" in page and "linux/arm64" in page
    for child in index.children:
        assert f"sha256-{child.digest.split(':')[1]}.html" in page
        assert (site / "r" / UPSTREAM_PREFIX / "multi" / "app" /
                f"sha256-{child.digest.split(':')[1]}.html").exists()


def test_sif_page_shows_what_the_sif_holds(site, seeded):
    image = seeded["sif/tool:1.0"]
    page = _page(site, "sif/tool", image.digest)
    sif = image.sif
    assert sif.definition in page
    for label, value in sif.labels.items():
        assert label in page and value in page
    assert sif.fingerprint.hex().upper() in page
    assert "PGP" in page and "Squashfs" in page and "PrimSys" in page
    assert "amd64" in page


def test_untrusted_strings_are_escaped(site, filled):
    _, _, extra = filled
    page = _page(site, "hostile/labels", extra["hostile"].digest, raw=True)
    index = (site / "index.html").read_text()
    for text in (page, index):
        assert XSS not in text
    assert XSS in html.unescape(page)


def test_damaged_content_is_shown_not_fatal(site):
    for repository in ("bad/config", "bad/sif"):
        directory = site / "r" / UPSTREAM_PREFIX / repository
        pages = [p for p in directory.iterdir() if p.name.startswith("sha256-")]
        assert len(pages) == 1
        text = html.unescape(pages[0].read_text())
        assert "Could not read everything" in text
    assert "not valid JSON" in next((site / "r" / UPSTREAM_PREFIX / "bad/config").glob(
        "sha256-*")).read_text()
    assert "not a readable SIF" in next((site / "r" / UPSTREAM_PREFIX / "bad/sif").glob(
        "sha256-*")).read_text()


def test_stats_page_has_an_svg_chart(site):
    page = (site / "stats.html").read_text()
    assert page.count("<svg") >= 1 and "Cache size" in page
    assert f"{UPSTREAM_PREFIX}" in page


def test_render_is_deterministic(filled, tmp_path, site):
    cfg, _, _ = filled
    again = tmp_path / "again"
    render(cfg, again)

    def tree(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert tree(again) == tree(site)


def test_second_render_reuses_every_page(filled, tmp_path):
    cfg, _, _ = filled
    out = tmp_path / "site"
    first = render(cfg, out)
    second = render(cfg, out)
    assert second.pages_reused == first.pages_written - _always_written(out)
    assert first.pages_reused == 0


def _always_written(out: Path) -> int:
    """Files written on every render: catalog.json, per-repository JSON, assets."""
    return 1 + len(list(out.rglob("repo.json"))) + len(list((out / "assets").iterdir()))


def test_cli_render_and_serve_publishes_the_site(filled, tmp_path):
    cfg, _, _ = filled
    out = tmp_path / "published"
    proxy = ProxyProcess(tmp_path, proxy_config(
        tmp_path, {"test": {"url": cfg.upstreams[0].url, "prefix": UPSTREAM_PREFIX,
                            "default": True}}, root=str(cfg.cache.root)))
    proxy.config["catalog"] = {"serve": True, "out": str(out), "title": "Site <images>"}
    proxy.config_path.write_text(toml_text(proxy.config))
    result = subprocess.run([sys.executable, "-m", "mirror.cli", "render", "--config",
                             str(proxy.config_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "rendered" in result.stdout and (out / "index.html").exists()
    with proxy:
        root = requests.get(proxy.url + "/", timeout=10)
        assert root.status_code == 200 and "Images cached by this mirror" in root.text
        assert "Site &lt;images&gt;" in root.text
        css = requests.get(proxy.url + "/assets/style.css", timeout=10)
        assert css.status_code == 200 and "prefers-color-scheme" in css.text
        assert requests.get(proxy.url + "/v2/", timeout=10).status_code == 200

"""`mirror render` over a cache that real pulls through the proxy filled."""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import subprocess
import sys
from pathlib import Path

import requests

from mirror import config as config_module
from mirror.catalog.render import render
from tests.conftest import UPSTREAM_PREFIX
from tests.support.accounts import write_htpasswd
from tests.support.catalog_cache import XSS
from tests.support.clients import oras_pull
from tests.support.proxy import ProxyProcess, proxy_config, toml_text, upstream_entry
from tests.support.sif_pulls import push_image, small_image


def _page(site: Path, repository: str, digest: str, *, raw: bool = False) -> str:
    """A manifest's page; unescaped (as a reader sees the text) unless `raw`."""
    text = (
        site / "r" / UPSTREAM_PREFIX / repository / f"sha256-{digest.split(':')[1]}.html"
    ).read_text()
    return text if raw else html.unescape(text)


def test_index_lists_every_repository_grouped_by_upstream(site, seeded):
    index = (site / "index.html").read_text()
    assert f"<h2>{UPSTREAM_PREFIX}</h2>" in index
    for repository in (
        "tools/alpha",
        "tools/beta",
        "multi/app",
        "legacy/dockerimg",
        "sif/tool",
        "sif/legacy",
        "sif/zeroconfig",
        "hostile/labels",
    ):
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
    mirror = f"mirror.site:5000/{UPSTREAM_PREFIX}"
    assert f"apptainer pull --no-https oras://{mirror}/sif/tool:1.0" in page
    assert f"oras://mirror.site:5000/{UPSTREAM_PREFIX}/sif/tool@{image.digest}" in page
    assert "[[registry.mirror]]" in page and "capabilities = [&#34;pull&#34;" in page
    oci_page = (site / "r" / UPSTREAM_PREFIX / "tools" / "beta" / "index.html").read_text()
    beta = f"mirror.site:5000/{UPSTREAM_PREFIX}/tools/beta:2.0"
    assert f"podman pull --tls-verify=false {beta}" in oci_page
    assert f"apptainer pull --no-https docker://{beta}" in oci_page
    # A plain-HTTP mirror: clients must be told it is one.
    assert "insecure = true" in page
    assert "[host.&#34;http://mirror.site:5000&#34;]" in page


INSECURE_FLAGS = ("--no-https", "--plain-http", "--tls-verify=false", "insecure", "http://mirror")


def test_a_mirror_served_over_https_gets_commands_without_insecure_flags(filled, tmp_path):
    cfg, seeded, _ = filled
    https = dataclasses.replace(cfg, catalog=dataclasses.replace(cfg.catalog, https=True))
    out = tmp_path / "site"
    render(https, out)

    pages = [page.read_text() for page in out.rglob("*.html")]
    for flag in INSECURE_FLAGS:
        assert not [page for page in pages if flag in page], flag
    sif = (out / "r" / UPSTREAM_PREFIX / "sif" / "tool" / "index.html").read_text()
    mirror = f"mirror.site:5000/{UPSTREAM_PREFIX}"
    assert f"apptainer pull oras://{mirror}/sif/tool:1.0" in sif
    assert f"oras pull {mirror}/sif/tool:1.0" in sif
    assert f"location = &#34;{mirror}&#34;" in sif
    assert "[host.&#34;https://mirror.site:5000&#34;]" in sif
    beta = (out / "r" / UPSTREAM_PREFIX / "tools" / "beta" / "index.html").read_text()
    assert f"podman pull {mirror}/tools/beta:2.0" in beta
    assert f"apptainer pull docker://{mirror}/tools/beta:2.0" in beta
    digest = seeded["tools/beta:2.0"].digest
    assert f"podman pull {mirror}/tools/beta@{digest}" in _page(out, "tools/beta", digest)
    assert json.loads((out / "catalog.json").read_text())["https"] is True


def test_oci_image_page_shows_config_layers_and_history(site, seeded):
    image = seeded["tools/alpha:1.0"]
    page = _page(site, "tools/alpha", image.digest)
    config = json.loads(image.blob_data[image.config["digest"]])
    for label, value in config["config"]["Labels"].items():
        assert label in page and value in page
    for variable in config["config"]["Env"]:
        assert variable in page
    assert json.dumps(config["config"]["Entrypoint"]) in page or "/opt/alpha/bin/alpha" in page
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
        assert (
            site
            / "r"
            / UPSTREAM_PREFIX
            / "multi"
            / "app"
            / f"sha256-{child.digest.split(':')[1]}.html"
        ).exists()


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
    assert (
        "not valid JSON"
        in next((site / "r" / UPSTREAM_PREFIX / "bad/config").glob("sha256-*")).read_text()
    )
    assert (
        "not a readable SIF"
        in next((site / "r" / UPSTREAM_PREFIX / "bad/sif").glob("sha256-*")).read_text()
    )


def test_stats_page_has_an_svg_chart(site):
    page = (site / "stats.html").read_text()
    assert page.count("<svg") >= 1 and "Cache size" in page
    assert f"{UPSTREAM_PREFIX}" in page


def test_render_is_deterministic(filled, tmp_path, site):
    cfg, _, _ = filled
    again = tmp_path / "again"
    render(cfg, again)

    def tree(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert tree(again) == tree(site)


def test_second_render_writes_nothing(filled, tmp_path):
    cfg, _, _ = filled
    out = tmp_path / "site"
    first = render(cfg, out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    second = render(cfg, out)
    assert first.pages_reused == 0
    assert (second.pages_written, second.pages_reused) == (0, first.pages_written)
    assert all(
        p.stat().st_mtime_ns == t for p, t in mtimes.items() if p.name != ".render-state.json"
    )


def test_cli_render_and_serve_publishes_the_site(filled, tmp_path):
    cfg, _, _ = filled
    out = tmp_path / "published"
    proxy = ProxyProcess(
        tmp_path,
        proxy_config(
            tmp_path,
            {"test": {"url": cfg.upstreams[0].url, "prefix": UPSTREAM_PREFIX, "default": True}},
            root=str(cfg.cache.root),
        ),
    )
    proxy.config["catalog"] = {"serve": True, "out": str(out), "title": "Site <images>"}
    proxy.config_path.write_text(toml_text(proxy.config))
    result = subprocess.run(
        [sys.executable, "-m", "mirror.cli", "render", "--config", str(proxy.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "rendered" in result.stdout and (out / "index.html").exists()
    with proxy:
        root = requests.get(proxy.url + "/", timeout=10)
        assert root.status_code == 200 and "Images cached by this mirror" in root.text
        assert "Site &lt;images&gt;" in root.text
        css = requests.get(proxy.url + "/assets/style.css", timeout=10)
        assert css.status_code == 200 and "prefers-color-scheme" in css.text
        assert requests.get(proxy.url + "/v2/", timeout=10).status_code == 200


def test_one_new_tag_rerenders_only_the_pages_it_touches(make_proxy, private_upstream, tmp_path):
    from mirror import config as config_module
    from tests.conftest import upstream_entry
    from tests.support import oci
    from tests.support.seed import RegistryClient, publish_image

    client = RegistryClient(private_upstream.url)
    accept = {"Accept": oci.ACCEPT_ALL_MANIFESTS}

    def push_and_pull(repository: str, tag: str) -> None:
        spec = oci.ImageConfigSpec(title=repository, version=tag)
        publish_image(
            client,
            repository,
            [tag],
            spec,
            [oci.make_layer(f"{repository}:{tag}", {"f": 100}, "F")],
        )
        assert requests.get(
            f"{proxy.url}/v2/{repository}/manifests/{tag}", headers=accept, timeout=30
        ).ok

    proxy = make_proxy({"u": upstream_entry(private_upstream.url)})
    for repository in ("app/one", "app/two", "app/three"):
        push_and_pull(repository, "1.0")
    cfg = config_module.load(
        None,
        {"cache": {"root": str(proxy.cache_root), "index_dir": str(tmp_path / "render-index")}},
    )
    out = tmp_path / "site"
    first = render(cfg, out)
    push_and_pull("app/two", "2.0")
    second = render(cfg, out)
    client.close()
    # new: the 2.0 manifest page; changed: app/two's page and repo.json, index.html,
    # stats.html, catalog.json. Everything else stays as it was.
    assert second.pages_written == 6
    assert second.pages_reused == first.pages_written - 5
    assert "2.0" in (out / "r" / UPSTREAM_PREFIX / "app" / "two" / "index.html").read_text()


def test_every_kind_is_named_from_one_source(tmp_path):
    """An artifact and an unreadable manifest, stored as the proxy stores them: each is
    named by KIND_LABELS in catalog.json, the tag table and its own page."""
    from mirror import config as config_module
    from mirror.cache.store import ContentStore, TagRecord
    from mirror.catalog.model import KIND_LABELS
    from mirror.manifests import Kind
    from mirror.reference import Digest, Repository
    from tests.support import oci

    store = ContentStore(tmp_path / "cache")

    def put(data: bytes) -> Digest:
        digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
        store.put_bytes(digest, data)
        return digest

    chart_config, chart = b"{}", b"chart bytes"
    artifact = oci.image_manifest(
        oci.OCI_MANIFEST,
        oci.descriptor_for("application/vnd.cncf.helm.config.v1+json", chart_config),
        [oci.descriptor_for("application/vnd.cncf.helm.chart.content.v1.tar+gzip", chart)],
    )
    for name, body in (("charts/web", artifact), ("broken/thing", b"\x00not a manifest")):
        repo = Repository("up.test", name)
        digest = put(body)
        store.link_manifest(repo, digest, oci.OCI_MANIFEST)
        store.write_tag(repo, "1.0", TagRecord(digest, oci.OCI_MANIFEST, 1_767_225_600.0))
    for blob in (chart_config, chart):
        put(blob)
    cfg = config_module.load(
        None,
        {
            "cache": {"root": str(tmp_path / "cache"), "index_dir": str(tmp_path / "index")},
            "catalog": {"mirror_url": "mirror.site:5000"},
        },
    )
    out = tmp_path / "site"
    render(cfg, out)

    rows = {
        row["name"]: row for row in json.loads((out / "catalog.json").read_text())["repositories"]
    }
    for name, kind in (("charts/web", Kind.ARTIFACT), ("broken/thing", Kind.UNKNOWN)):
        label = KIND_LABELS[kind]
        assert rows[name]["kinds"] == [label]
        directory = out / "r" / "up.test" / name
        assert f"<td>{label}</td>" in (directory / "index.html").read_text()
        [page] = directory.glob("sha256-*.html")
        assert f'<p class="lead">{label[0].upper()}{label[1:]} ·' in page.read_text()
    web = json.loads((out / "r" / "up.test" / "charts" / "web" / "repo.json").read_text())
    [facts] = web["manifests"].values()
    assert facts["kind"] == "artifact" and len(facts["layers"]) == 1 and "image" not in facts
    assert (
        "oras pull --plain-http mirror.site:5000/up.test/charts/web:1.0"
        in (out / "r" / "up.test" / "charts" / "web" / "index.html").read_text()
    )
    broken = json.loads((out / "r" / "up.test" / "broken" / "thing" / "repo.json").read_text())
    [facts] = broken["manifests"].values()
    assert facts["problems"] and "layers" not in facts and "children" not in facts


def test_restricted_repositories_are_left_out_unless_included(filled, tmp_path):
    """Once a rule closes tools/* to anonymous pulls, the static catalog (readable by anyone
    who reaches the web server) lists only what anonymous clients may pull."""
    cfg, _, _ = filled
    upstream = cfg.upstreams[0]
    overrides = {
        "auth": {"htpasswd": str(tmp_path / "htpasswd")},
        "upstreams": {
            "test": {
                "url": upstream.url,
                "prefix": upstream.prefix,
                "default": True,
                "rules": [{"repositories": ["tools/*"], "access": "authenticated"}],
            }
        },
        "catalog": {"mirror_url": "mirror.site:5000"},
    }
    closed = config_module.load(filled_config_path(cfg), overrides)
    render(closed, tmp_path / "public")
    public = json.loads((tmp_path / "public" / "catalog.json").read_text())
    paths = {row["path"] for row in public["repositories"]}
    assert f"{UPSTREAM_PREFIX}/multi/app" in paths
    assert not any(path.startswith(f"{UPSTREAM_PREFIX}/tools/") for path in paths)
    assert not (tmp_path / "public" / "r" / UPSTREAM_PREFIX / "tools").exists()
    assert "tools/alpha" not in (tmp_path / "public" / "index.html").read_text()

    overrides["catalog"]["include_restricted"] = True
    render(config_module.load(filled_config_path(cfg), overrides), tmp_path / "all")
    every = json.loads((tmp_path / "all" / "catalog.json").read_text())
    assert {f"{UPSTREAM_PREFIX}/tools/alpha", *paths} <= {r["path"] for r in every["repositories"]}


def filled_config_path(cfg) -> Path:
    return Path(cfg.source)


def test_converted_sifs_are_listed_with_their_command_tree_path_and_source(
    make_proxy, upstream, tmp_path: Path
):
    push_image(upstream.url, "catalog/converted", "1", small_image("catalog"))
    push_image(upstream.url, "catalog/secret", "1", small_image("secret"))
    rules = [{"repositories": ["catalog/secret"], "access": "restricted", "users": ["alice"]}]
    accounts = {"htpasswd": str(write_htpasswd(tmp_path / "htpasswd", {"alice": "pw"}))}
    tree = tmp_path / "tree"
    proxy = make_proxy(
        {"u": upstream_entry(upstream.url, rules=rules)}, sif_tree=str(tree), auth=accounts
    )
    under = f"sif/{UPSTREAM_PREFIX}"
    oras_pull(proxy.host, "catalog/converted:1", tmp_path / "a", under=under)
    oras_pull(
        proxy.host, "catalog/secret:1", tmp_path / "b", under=under, user="alice", password="pw"
    )
    cfg = config_module.load(proxy.config_path, {"catalog": {"mirror_url": "mirror.site:5000"}})
    out = tmp_path / "site"

    render(cfg, out)

    sif = f"sif/{UPSTREAM_PREFIX}/catalog/converted"
    page = html.unescape((out / "r" / sif / "index.html").read_text())
    assert f"apptainer pull --no-https oras://mirror.site:5000/{sif}:1" in page
    assert str(tree / UPSTREAM_PREFIX / "catalog" / "converted" / "1.sif") in page
    assert f'href="../../../../../r/{UPSTREAM_PREFIX}/catalog/converted/index.html"' in page
    source = (out / "r" / UPSTREAM_PREFIX / "catalog" / "converted" / "index.html").read_text()
    assert f'href="../../../../r/{sif}/index.html"' in source
    index = (out / "index.html").read_text()
    assert f'href="r/{sif}/index.html"' in index
    digest = requests.get(f"{proxy.url}/v2/{sif}/manifests/1", timeout=60).headers[
        "Docker-Content-Digest"
    ]
    manifest_page = html.unescape((out / "r" / sif / f"sha256-{digest[7:]}.html").read_text())
    assert "Built from an OCI image" in manifest_page  # Apptainer's oci-config.json shape
    assert '["/bin/echo"]' in manifest_page
    assert "catalog/secret" not in index  # restricted: as its source, not listed

"""The catalog of local images: listed by namespace, with who pushed them and when, their
signatures (in the SIF, and OCI referrers) and the commands that pull them."""

from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path

from mirror.catalog.render import render
from tests.support.local_catalog import CACHED, COSIGN, LocalCatalog
from tests.support.proxy import UPSTREAM_PREFIX

MIRROR = "mirror.site:5000"


def _render(local_catalog: LocalCatalog, out: Path, **local) -> Path:
    render(local_catalog.config(**local), out)
    return out


def _text(path: Path) -> str:
    return html.unescape(path.read_text())


def test_index_groups_local_images_by_namespace_with_pusher_and_time(local_catalog, tmp_path):
    site = _render(local_catalog, tmp_path / "site")

    index = (site / "index.html").read_text()
    assert '<h2 id="local-heading">Local images</h2>' in index
    assert index.index("<h3>local/alice</h3>") < index.index("<h3>local/physics</h3>")
    alice = index[index.index("<h3>local/alice</h3>") : index.index("<h3>local/physics</h3>")]
    assert 'href="r/local/alice/tool/index.html"' in alice
    assert "<td>alice</td>" in alice and "<td>2025-06-15</td>" in alice
    assert "1 in the SIF, 1 referrer" in alice
    physics = index[index.index("<h3>local/physics</h3>") :]
    assert 'href="r/local/physics/app/index.html"' in physics and "<td>bob</td>" in physics
    assert f"<h2>{UPSTREAM_PREFIX}</h2>" in index  # cached images as before
    assert "and 2 local repositories" in index
    rows = {
        row["path"]: row for row in json.loads((site / "catalog.json").read_text())["repositories"]
    }
    tool = rows["local/alice/tool"]
    assert (tool["namespace"], tool["pushed_by"], tool["pushed_at"]) == (
        "local/alice",
        "alice",
        "2025-06-15T15:06:40Z",
    )
    assert (tool["sif_signatures"], tool["referrers"], tool["signed"]) == (1, 1, True)
    assert rows[str(CACHED)]["namespace"] == "" and rows[str(CACHED)]["pushed_by"] is None


def test_local_sif_page_lists_signatures_referrers_and_oras_pull(local_catalog, tmp_path):
    site = _render(local_catalog, tmp_path / "site")
    tool = local_catalog.tool

    page = _text(site / "r" / "local" / "alice" / "tool" / "index.html")

    assert "A local image of <code>local/alice</code>" in page
    assert f"apptainer pull --no-https oras://{MIRROR}/local/alice/tool:1.0" in page
    assert f"apptainer pull --no-https oras://{MIRROR}/local/alice/tool@{tool.digest}" in page
    assert "[[registry.mirror]]" not in page  # no upstream to route through the mirror
    fingerprint = local_catalog.sif.fingerprint.hex().upper()
    assert f"SIF signature object 4: PGP, key <code>{fingerprint}</code>" in page
    signature = local_catalog.signature
    assert f"<code>{COSIGN}</code>" in page
    assert f'title="{signature.digest}"' in page
    assert "<td>carol</td>" in page and "<td>2025-06-15</td>" in page
    manifest = _text(site / "r" / "local" / "alice" / "tool" / f"sha256-{tool.digest.hex}.html")
    assert "Pushed to this mirror" in manifest
    assert "<dt>Pushed by</dt><dd>alice</dd>" in manifest
    assert "<dd>2025-06-15T15:06:40Z</dd>" in manifest
    assert COSIGN in manifest and "<td>carol</td>" in manifest


def test_local_oci_image_gets_podman_and_apptainer_docker_commands(local_catalog, tmp_path):
    plain = _render(local_catalog, tmp_path / "plain")
    app = local_catalog.app
    page = _text(plain / "r" / "local" / "physics" / "app" / "index.html")
    assert f"podman pull --tls-verify=false {MIRROR}/local/physics/app:2" in page
    assert f"apptainer pull --no-https docker://{MIRROR}/local/physics/app:2" in page
    assert f"podman pull --tls-verify=false {MIRROR}/local/physics/app@{app.digest}" in page
    assert "No artifact (signature, SBOM) was pushed" in page

    cfg = local_catalog.config()
    https = dataclasses.replace(cfg, catalog=dataclasses.replace(cfg.catalog, https=True))
    render(https, tmp_path / "https")
    page = _text(tmp_path / "https" / "r" / "local" / "physics" / "app" / "index.html")
    assert f"podman pull {MIRROR}/local/physics/app:2" in page
    assert f"apptainer pull docker://{MIRROR}/local/physics/app:2" in page
    tool = _text(tmp_path / "https" / "r" / "local" / "alice" / "tool" / "index.html")
    assert f"apptainer pull oras://{MIRROR}/local/alice/tool:1.0" in tool


def test_restricted_local_namespace_is_left_out_unless_included(local_catalog, tmp_path):
    closed = _render(local_catalog, tmp_path / "closed", access="authenticated")
    paths = {r["path"] for r in json.loads((closed / "catalog.json").read_text())["repositories"]}
    assert paths == {str(CACHED)}
    assert not (closed / "r" / "local").exists()
    assert "Local images" not in (closed / "index.html").read_text()

    every = _render(
        local_catalog,
        tmp_path / "every",
        access="authenticated",
        catalog={"include_restricted": True},
    )
    paths = {r["path"] for r in json.loads((every / "catalog.json").read_text())["repositories"]}
    assert paths == {str(CACHED), "local/alice/tool", "local/physics/app"}

"""The catalog's pages and JSON files, rendered from the model through the site writer.

A page is rendered only when its fingerprint (its inputs, or a cheaper key standing for
them) differs from the previous render's, which is what makes an incremental render cheap.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from mirror import __version__
from mirror.catalog.charts import bar_chart
from mirror.catalog.model import (
    KIND_LABELS,
    Child,
    ManifestFacts,
    RepoRow,
    RepoView,
    SiteInfo,
    catalog_json,
    iso_text,
    json_default,
    manifest_page,
)
from mirror.catalog.site_writer import SiteWriter
from mirror.manifests import Kind
from mirror.units import human_size

TEMPLATES = Path(__file__).parent.parent / "templates"
# Bump when the model changes shape, so every page and the state are rebuilt.
_MODEL_VERSION = 5


def _templates_digest() -> str:
    """A hash of every template and asset: an edited template re-renders every page."""
    digest = hashlib.sha256()
    for path in sorted(p for p in TEMPLATES.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(TEMPLATES)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


RENDER_VERSION = f"{__version__}-{_MODEL_VERSION}-{_templates_digest()}"


@dataclass(frozen=True)
class PullCommand:
    """A command that pulls an image through the mirror, with the client it is for."""

    label: str
    text: str


@dataclass(frozen=True)
class UpstreamStats:
    """One upstream's line on the statistics page."""

    prefix: str
    repositories: int
    tags: int
    size: int  # of the newest tag of each repository


def pull_commands(site: SiteInfo, path: str, reference: str, kind: Kind) -> list[PullCommand]:
    """The commands that pull `path` at `reference` (tag or digest) through this mirror;
    with the flags a plain-HTTP mirror needs unless it is served over HTTPS."""
    ref = f"{site.mirror}/{path}{'@' if ':' in reference else ':'}{reference}"
    plain = not site.https
    apptainer = "apptainer pull --no-https" if plain else "apptainer pull"
    oras = "oras pull --plain-http" if plain else "oras pull"
    podman = "podman pull --tls-verify=false" if plain else "podman pull"
    if kind == Kind.SIF:
        return [
            PullCommand("Apptainer (ORAS)", f"{apptainer} oras://{ref}"),
            PullCommand("oras", f"{oras} {ref}"),
        ]
    if kind in (Kind.IMAGE, Kind.INDEX):
        return [
            PullCommand("Apptainer (docker)", f"{apptainer} docker://{ref}"),
            PullCommand("podman", f"{podman} {ref}"),
        ]
    return [PullCommand("oras", f"{oras} {ref}")]


def client_snippets(site: SiteInfo, prefix: str) -> list[PullCommand]:
    """The registries.conf and containerd hosts.toml entries that make `prefix` pull
    through this mirror by default: `insecure` and `http://` only for a plain-HTTP one."""
    registries = (
        f'[[registry]]\nprefix = "{prefix}"\nlocation = "{prefix}"\n'
        f'[[registry.mirror]]\nlocation = "{site.mirror}/{prefix}"'
    )
    hosts = f'[host."{"https" if site.https else "http"}://{site.mirror}"]\n'
    hosts += '  capabilities = ["pull", "resolve"]'
    if site.https:
        hosts += f'\n  # ca = "/etc/containerd/certs.d/{prefix}/site-ca.pem"  # for a site CA'

    else:
        registries += "\ninsecure = true"
    return [
        PullCommand("registries.conf snippet", registries),
        PullCommand("containerd hosts.toml snippet", hosts),
    ]


def fingerprint(*parts: Any) -> str:
    """A hash of `parts` (model records included) that changes with RENDER_VERSION."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=json_default)
    return hashlib.sha256(f"{RENDER_VERSION}\0{text}".encode()).hexdigest()


class Pages:
    """Renders the pages of one site through `writer`; a helper process has its own."""

    def __init__(self, site: SiteInfo, writer: SiteWriter) -> None:
        self.site = site
        self.site_key = fingerprint(site)
        self.writer = writer
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            undefined=StrictUndefined,
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self.env.filters["size"] = human_size
        self.env.filters["short"] = lambda digest: digest.split(":")[-1][:12]
        self.env.filters["date"] = lambda text: (text or "")[:10]
        self.env.filters["capfirst"] = lambda text: text[:1].upper() + text[1:]
        self.env.filters["iso"] = iso_text
        self.env.globals["pull_commands"] = pull_commands
        self.env.globals["client_snippets"] = client_snippets
        self.env.globals["kind_labels"] = KIND_LABELS

    def repository(self, view: RepoView) -> list[str]:
        """The pages of one repository: a page per manifest (leaves first), repo.json, and
        its index page. Returns the files, for the render state."""
        depth = 3 + view.name.count("/")
        files = [
            self._manifest_page(view, facts, depth) for _, facts in sorted(view.manifests.items())
        ]
        self.writer.write(f"{view.directory}/repo.json", _dumps(view.to_json()))
        index = f"{view.directory}/index.html"
        self._page(
            index,
            "repository.html",
            {"repo": view, "tags": view.tags},
            depth,
            fingerprint(
                "repository.html",
                view.path,
                view.tags,
                view.converted_from,
                view.converted_to,
                view.sif_files,
                view.namespace,
                view.pushed,
                view.referrers,
                [_sif_signatures(view.manifests[tag.digest]) for tag in view.tags],
                self.site_key,
                depth,
            ),
        )
        return files + [f"{view.directory}/repo.json", index]

    def site_pages(self, rows: list[RepoRow], blob_count: int, cache_size: int) -> None:
        """The pages over all repositories, last: they link to everything else."""
        for asset in sorted((TEMPLATES / "assets").iterdir()):
            self.writer.write(f"assets/{asset.name}", asset.read_bytes())
        self._page("stats.html", "stats.html", _stats(rows, blob_count, cache_size))
        self.writer.write("catalog.json", _dumps(catalog_json(self.site, rows)))
        upstream_rows = [row for row in rows if not row.namespace]
        local_groups: dict[str, list[RepoRow]] = {}
        for row in rows:
            if row.namespace:
                local_groups.setdefault(row.namespace, []).append(row)
        context = {
            "rows": upstream_rows,
            "groups": _group(upstream_rows),
            "local_groups": sorted(local_groups.items()),
            "local_count": len(rows) - len(upstream_rows),
        }
        self._page("index.html", "index.html", context)

    def _manifest_page(self, view: RepoView, facts: ManifestFacts, depth: int) -> str:
        relpath = f"{view.directory}/{manifest_page(facts.digest)}"
        children: list[tuple[Child, ManifestFacts]] = [
            (child, view.manifests[child.digest]) for child in facts.children or ()
        ]
        tag_names = sorted(tag.name for tag in view.tags if tag.digest == facts.digest)
        template = "sif.html" if facts.kind is Kind.SIF else "manifest.html"
        if facts.complete and all(child.complete for _, child in children):
            # Facts are immutable by digest once complete: a cheap key instead of hashing
            # them (which dominates a first render otherwise).
            inputs: tuple = (facts.digest, facts.media_type, [c.digest for c, _ in children])
        else:
            inputs = (facts, children)
        local = (view.pushed.get(facts.digest), view.referrers.get(facts.digest, ()))
        key = fingerprint(template, view.path, tag_names, self.site_key, depth, local, *inputs)
        self._page(
            relpath,
            template,
            {"repo": view, "facts": facts, "tag_names": tag_names, "children": children},
            depth,
            key,
        )
        return relpath

    def _page(
        self,
        relpath: str,
        template: str,
        context: dict[str, Any],
        depth: int = 0,
        key: str | None = None,
    ) -> None:
        """Render `template` to `relpath` unless its inputs (or the given `key` standing
        for them) are what the previous render used."""
        context = {**context, "site": self.site, "root": "../" * depth or "./"}
        key = key or fingerprint(template, context)
        if self.writer.unchanged(relpath, key):
            return
        self.writer.write(relpath, self.env.get_template(template).render(context), key)


def _stats(rows: list[RepoRow], blob_count: int, cache_size: int) -> dict[str, Any]:
    """The statistics page's context."""
    upstreams = [
        UpstreamStats(
            prefix,
            len(group),
            sum(len(r.tag_names) for r in group),
            sum(r.size or 0 for r in group),
        )
        for prefix, group in _group(rows)
    ]
    largest = sorted(rows, key=lambda r: (-(r.size or 0), r.path))[:10]
    pulled = sorted((r for r in rows if r.pulls), key=lambda r: (-r.pulls, r.path))
    return {
        "blob_count": blob_count,
        "cache_size": cache_size,
        "upstreams": upstreams,
        "largest": largest,
        "most_pulled": pulled[:10],
        "size_chart": bar_chart(
            [(u.prefix, u.size) for u in upstreams], human_size, "Cached size per upstream"
        ),
        "largest_chart": bar_chart(
            [(r.path, r.size or 0) for r in largest], human_size, "Largest repositories"
        ),
    }


def _sif_signatures(facts: ManifestFacts) -> int:
    return len(facts.sif.signatures) if facts.sif else 0


def _group(rows: list[RepoRow]) -> list[tuple[str, list[RepoRow]]]:
    groups: dict[str, list[RepoRow]] = {}
    for row in rows:
        groups.setdefault(row.prefix, []).append(row)
    return sorted(groups.items())


def _dumps(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=json_default
    )

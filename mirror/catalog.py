"""The static catalog: gather everything from the store and index, then render and write.

Like a static site generator, it first builds the whole model (repositories, tags, facts
per manifest) and only then renders pages through one writer. It reads only the content
store and the metadata index and never contacts an upstream. Output is deterministic:
everything is sorted and no render time is written, so the same cache gives a
byte-identical site, and unchanged pages are reused from the previous render.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import diskcache
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from . import __version__
from .charts import bar_chart
from .config import Config
from .facts import OCI_KEY_PREFIX, manifest_facts
from .index import MetadataIndex
from .reference import Digest, Repository
from .sitewriter import SiteWriter
from .store import ContentStore

TEMPLATES = Path(__file__).parent / "templates"
# Bump when templates or facts change shape, so cached facts and pages are rebuilt.
RENDER_VERSION = f"{__version__}-1"
KIND_LABELS = {"image": "OCI image", "index": "multi-arch index", "sif": "SIF",
               "artifact": "other artifact", "unknown": "unreadable"}


@dataclass
class TagView:
    name: str
    digest: str
    media_type: str
    confirmed_at: str
    pulls: int
    last_pulled: str | None


@dataclass
class RepoView:
    prefix: str
    name: str
    slug: str  # directory of its pages, relative to the site root
    tags: list[TagView] = field(default_factory=list)
    facts: dict[str, dict] = field(default_factory=dict)  # digest -> facts, tags and children

    @property
    def path(self) -> str:
        return f"{self.prefix}/{self.name}"


@dataclass(frozen=True)
class RenderReport:
    out: Path
    repositories: int
    tags: int
    pages_written: int
    pages_reused: int


class FactsCache:
    """Facts by manifest digest, kept next to the index (node-local, rebuildable)."""

    def __init__(self, directory: Path, store: ContentStore) -> None:
        self._cache = diskcache.Cache(str(directory), eviction_policy="none")
        self._store = store

    def get(self, digest: str, media_type: str) -> dict:
        key = (RENDER_VERSION, digest, media_type)
        facts = self._cache.get(key)
        if facts is None:
            facts = manifest_facts(self._store, Digest.parse(digest), media_type)
            if facts["complete"]:
                self._cache.set(key, facts)
        return facts

    def close(self) -> None:
        self._cache.close()


def render(config: Config, out: Path | None = None) -> RenderReport:
    """Render the catalog of `config`'s cache into `out` (default: catalog.out)."""
    store = ContentStore(config.cache.root)
    index = MetadataIndex(config.cache.index_dir, store)
    facts = FactsCache(config.cache.index_dir / "catalog-facts", store)
    try:
        repos = gather(store, index, facts)
        writer = SiteWriter(out or config.catalog.out)
        try:
            _Renderer(config, store, writer).render_all(repos)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
    finally:
        facts.close()
        index.close()
    return RenderReport(writer.out, len(repos), sum(len(r.tags) for r in repos),
                        writer.written, writer.reused)


def gather(store: ContentStore, index: MetadataIndex, facts: FactsCache) -> list[RepoView]:
    repos = []
    for repo in store.list_repositories():
        view = RepoView(repo.prefix, repo.name, f"r/{_slug(repo)}")
        for tag in store.list_tags(repo):
            record = store.read_tag(repo, tag)
            if record is None:
                continue
            pulls, last = index.pull_stats(repo, tag)
            view.tags.append(TagView(tag, str(record.digest), record.media_type,
                                     _iso(record.confirmed_at), pulls, _iso(last)))
            _add_facts(view, facts, str(record.digest), record.media_type, store, repo)
        if view.tags:
            repos.append(view)
    return repos


def _add_facts(view: RepoView, facts: FactsCache, digest: str, media_type: str,
               store: ContentStore, repo: Repository) -> None:
    if digest in view.facts:
        return
    found = facts.get(digest, media_type)
    view.facts[digest] = found
    for child in found.get("children", []):
        child_type = store.manifest_media_type(repo, Digest.parse(child["digest"]))
        _add_facts(view, facts, child["digest"], child_type or child["media_type"], store, repo)


def summarize(view: RepoView, digest: str) -> dict[str, Any]:
    """One manifest as the index lists it; an index takes sizes and dates from children."""
    found = view.facts[digest]
    children = [view.facts[c["digest"]] for c in found.get("children", [])]
    sizes = [c["total_size"] for c in children] or [found["total_size"]]
    created = found["created"] or max((c["created"] for c in children if c["created"]),
                                      default=None)
    sif = found.get("sif") or {}
    meta = {**(found.get("image") or {}).get("labels", {}), **sif.get("labels", {}),
            **found["annotations"]}
    return {
        "kind": found["kind"],
        "kind_label": KIND_LABELS.get(found["kind"], found["kind"]),
        "platforms": found["platforms"],
        "size": sum(sizes) if None not in sizes else None,
        "created": created,
        "signed": bool(sif.get("signed")),
        "encrypted": bool(sif.get("encrypted")),
        "title": meta.get(OCI_KEY_PREFIX + "title", ""),
        "description": meta.get(OCI_KEY_PREFIX + "description", ""),
        "damaged": bool(found["problems"]),
    }


class _Renderer:
    def __init__(self, config: Config, store: ContentStore, writer: SiteWriter) -> None:
        self.config = config
        self.store = store
        self.writer = writer
        self.env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined,
                               autoescape=select_autoescape(["html"]), trim_blocks=True,
                               lstrip_blocks=True, keep_trailing_newline=True)
        self.env.filters["size"] = human_size
        self.env.filters["short"] = lambda digest: digest.split(":")[-1][:12]
        self.env.filters["date"] = lambda text: (text or "")[:10]
        self.site = {"title": config.catalog.title, "mirror": config.catalog.mirror_url,
                     "tls": False, "version": __version__}

    def render_all(self, repos: list[RepoView]) -> None:
        rows = []
        for view in repos:
            summaries = {t.name: summarize(view, t.digest) for t in view.tags}
            rows.append(self._repo_row(view, summaries))
            self._repository_pages(view, summaries)
        self._page("index.html", "index.html", {"rows": rows, "groups": _group(rows)})
        self._page("stats.html", "stats.html", self._stats(repos, rows))
        catalog = {"title": self.site["title"], "mirror": self.site["mirror"],
                   "repositories": [_json_row(row) for row in rows]}
        self.writer.write("catalog.json", _dumps(catalog))
        for asset in sorted((TEMPLATES / "assets").iterdir()):
            self.writer.write(f"assets/{asset.name}", asset.read_bytes())

    def _repo_row(self, view: RepoView, summaries: dict[str, dict]) -> dict[str, Any]:
        latest = summaries[_newest_tag(view)]
        kinds = sorted({s["kind_label"] for s in summaries.values()})
        platforms = sorted({p for s in summaries.values() for p in s["platforms"]})
        last_pulled = max((t.last_pulled for t in view.tags if t.last_pulled), default=None)
        return {"prefix": view.prefix, "name": view.name, "path": view.path,
                "href": f"{view.slug}/index.html", "tags": [t.name for t in view.tags],
                "kinds": kinds, "platforms": platforms, "size": latest["size"],
                "created": latest["created"], "last_pulled": last_pulled,
                "pulls": sum(t.pulls for t in view.tags),
                "signed": any(s["signed"] for s in summaries.values()),
                "encrypted": any(s["encrypted"] for s in summaries.values()),
                "title": latest["title"], "description": latest["description"],
                "damaged": any(s["damaged"] for s in summaries.values())}

    def _repository_pages(self, view: RepoView, summaries: dict[str, dict]) -> None:
        tags = [{**vars(t), "summary": summaries[t.name],
                 "href": f"sha256-{t.digest.split(':')[1]}.html"} for t in view.tags]
        context = {"repo": {"prefix": view.prefix, "name": view.name, "path": view.path},
                   "tags": tags}
        self._page(f"{view.slug}/index.html", "repository.html", context, depth=3 + _depth(view))
        self.writer.write(f"{view.slug}/repo.json", _dumps({
            "repository": view.path, "tags": [_json_tag(t) for t in tags],
            "manifests": {d: f for d, f in sorted(view.facts.items())}}))
        for digest, found in sorted(view.facts.items()):
            tag_names = sorted(t.name for t in view.tags if t.digest == digest)
            template = "sif.html" if found["kind"] == "sif" else "manifest.html"
            children = [{**c, "summary": view.facts.get(c["digest"])}
                        for c in found.get("children", [])]
            self._page(f"{view.slug}/sha256-{digest.split(':')[1]}.html", template,
                       {"repo": context["repo"], "facts": found, "tags": tag_names,
                        "children": children}, depth=3 + _depth(view))

    def _stats(self, repos: list[RepoView], rows: list[dict]) -> dict[str, Any]:
        blob_count, cache_size = _blob_totals(self.store)
        per_upstream = []
        for prefix, group in _group(rows):
            per_upstream.append({"prefix": prefix, "repositories": len(group),
                                 "tags": sum(len(r["tags"]) for r in group),
                                 "size": sum(r["size"] or 0 for r in group)})
        largest = sorted(rows, key=lambda r: (-(r["size"] or 0), r["path"]))[:10]
        pulled = sorted((r for r in rows if r["pulls"]), key=lambda r: (-r["pulls"], r["path"]))
        return {"blob_count": blob_count, "cache_size": cache_size,
                "upstreams": per_upstream, "largest": largest, "most_pulled": pulled[:10],
                "size_chart": bar_chart([(u["prefix"], u["size"]) for u in per_upstream],
                                        human_size, "Cached size per upstream"),
                "largest_chart": bar_chart([(r["path"], r["size"] or 0) for r in largest],
                                           human_size, "Largest repositories")}

    def _page(self, relpath: str, template: str, context: dict, depth: int = 0) -> None:
        context = {**context, "site": self.site, "root": "../" * depth or "./"}
        fingerprint = hashlib.sha256(
            f"{RENDER_VERSION}\0{template}\0".encode() + _dumps(context).encode()).hexdigest()
        if self.writer.unchanged(relpath, fingerprint):
            return
        self.writer.write(relpath, self.env.get_template(template).render(context), fingerprint)


def _slug(repo: Repository) -> str:
    """Directory of a repository's pages. A prefix may hold ':' (host:port), which a
    relative link would read as a URL scheme; '_' never occurs in a prefix."""
    return f"{repo.prefix.replace(':', '_')}/{repo.name}"


def _depth(view: RepoView) -> int:
    return view.name.count("/")


def _newest_tag(view: RepoView) -> str:
    names = [t.name for t in view.tags]
    return "latest" if "latest" in names else max(
        view.tags, key=lambda t: (view.facts[t.digest]["created"] or "", t.name)).name


def _group(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["prefix"], []).append(row)
    return sorted(groups.items())


def _blob_totals(store: ContentStore) -> tuple[int, int]:
    count = size = 0
    for shard in sorted(store.blobs_dir.iterdir()):
        with os.scandir(shard) as entries:
            for entry in entries:
                count += 1
                size += entry.stat().st_size
    return count, size


def _json_row(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "href"} | {"page": row["href"]}


def _json_tag(tag: dict) -> dict:
    return {k: tag[k] for k in ("name", "digest", "media_type", "confirmed_at", "pulls",
                                "last_pulled")} | {"page": tag["href"]}


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False, default=str)


def _iso(timestamp: float) -> str | None:
    if not timestamp:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"

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
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from mirror import __version__
from mirror.cache.open_cache import open_cache
from mirror.cache.pulls import PullStats
from mirror.cache.store import ContentStore
from mirror.catalog.charts import bar_chart
from mirror.catalog.facts import OCI_KEY_PREFIX, manifest_facts
from mirror.catalog.site_writer import SiteWriter
from mirror.config import Config
from mirror.reference import Digest, Repository
from mirror.units import human_size

TEMPLATES = Path(__file__).parent.parent / "templates"
# Bump when templates or facts change shape, so cached facts and pages are rebuilt.
RENDER_VERSION = f"{__version__}-2"
_REPOS_PER_WORKER = 100  # below this, a helper process costs more than it saves
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
    pages_written: int  # files written by this render
    pages_reused: int   # files left as the previous render wrote them


class FactsCache:
    """Facts by manifest digest for one render. Not kept between renders: a repository
    whose signature is unchanged is not gathered at all, and one that changed needs only
    its own few manifests, which are cheaper to read again than to keep in a database."""

    def __init__(self, store: ContentStore) -> None:
        self._store = store
        self._facts: dict[str, dict] = {}

    def get(self, digest: str, media_type: str) -> dict:
        key = f"{digest}:{media_type}"
        facts = self._facts.get(key)
        if facts is None:
            facts = manifest_facts(self._store, Digest.parse(digest), media_type)
            self._facts[key] = facts
        return facts


def render(config: Config, out: Path | None = None) -> RenderReport:
    """Render the catalog of `config`'s cache into `out` (default: catalog.out)."""
    with open_cache(config.cache) as cache:
        writer = SiteWriter(out or config.catalog.out)
        renderer = _Renderer(config, cache.store, cache.pulls, FactsCache(cache.store), writer)
        rows = renderer.render_repositories()
        renderer.render_site_pages(rows)
        writer.commit({"site_key": renderer.site_key, "repos": renderer.repo_state})
    return RenderReport(writer.out, len(rows), sum(len(r["tags"]) for r in rows),
                        writer.written, writer.reused)


def gather(store: ContentStore, pull_stats: PullStats, facts: FactsCache,
           repo: Repository) -> RepoView:
    """Everything the pages of one repository show, from the store and pull statistics."""
    view = RepoView(repo.prefix, repo.name, f"r/{_slug(repo)}")
    pulls = pull_stats.counts(repo)
    for tag in store.list_tags(repo):
        record = store.read_tag(repo, tag)
        if record is None:
            continue
        count, last = pulls.get(tag, (0, 0.0))
        view.tags.append(TagView(tag, str(record.digest), record.media_type,
                                 _iso(record.confirmed_at), count, _iso(last)))
        _add_facts(view, facts, str(record.digest), record.media_type, store, repo)
    return view


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


def pull_commands(site: dict, path: str, reference: str, kind: str) -> list[dict[str, str]]:
    """The commands that pull `path` at `reference` (tag or digest) through this mirror."""
    ref = f"{site['mirror']}/{path}{'@' if ':' in reference else ':'}{reference}"
    plain = not site["tls"]
    apptainer = "apptainer pull" + (" --no-https" if plain else "")
    oras = "oras pull" + (" --plain-http" if plain else "")
    podman = "podman pull" + (" --tls-verify=false" if plain else "")
    if kind == "sif":
        return [{"label": "Apptainer (ORAS)", "text": f"{apptainer} oras://{ref}"},
                {"label": "oras", "text": f"{oras} {ref}"}]
    if kind in ("image", "index"):
        return [{"label": "Apptainer (docker)", "text": f"{apptainer} docker://{ref}"},
                {"label": "podman", "text": f"{podman} {ref}"}]
    return [{"label": "oras", "text": f"{oras} {ref}"}]


def _render_chunk(config: Config, out: Path, old_files: dict[str, str],
                  changed: list[tuple[Repository, list]]) -> dict[str, Any]:
    """A helper process's share of a render: its repositories' pages, written directly."""
    with open_cache(config.cache) as cache:
        writer = SiteWriter(out, old_files=old_files)
        repos = _Renderer(config, cache.store, cache.pulls, FactsCache(cache.store),
                          writer).render_changed(changed)
        return {"repos": repos, "files": writer.files, "written": writer.written,
                "reused": writer.reused}


class _Renderer:
    def __init__(self, config: Config, store: ContentStore, pulls: PullStats,
                 facts: FactsCache, writer: SiteWriter) -> None:
        self.config = config
        self.store = store
        self.pulls = pulls
        self.facts = facts
        self.writer = writer
        self.env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined,
                               autoescape=select_autoescape(["html"]), trim_blocks=True,
                               lstrip_blocks=True, keep_trailing_newline=True,
                               auto_reload=False)
        self.env.filters["size"] = human_size
        self.env.filters["short"] = lambda digest: digest.split(":")[-1][:12]
        self.env.filters["date"] = lambda text: (text or "")[:10]
        self.env.globals["pull_commands"] = pull_commands
        self.site = {"title": config.catalog.title, "mirror": config.catalog.mirror_url,
                     "tls": False, "version": __version__}
        self.site_key = _fingerprint(RENDER_VERSION, self.site)
        previous = writer.previous if writer.previous.get("site_key") == self.site_key else {}
        self._previous_repos: dict[str, dict] = previous.get("repos", {})
        self.repo_state: dict[str, dict] = {}

    def render_repositories(self) -> list[dict[str, Any]]:
        """Render each changed repository's pages; keep unchanged ones as they are. Many
        changed repositories (a first render) are shared out to one process per core."""
        order, changed = [], []
        for repo in self.store.list_repositories():
            slug = f"r/{_slug(repo)}"
            signature = self.store.repo_signature(repo) + [
                _fingerprint(self.pulls.counts(repo))]
            old = self._previous_repos.get(slug)
            order.append(slug)
            if old and old["signature"] == signature and all(map(self.writer.keep,
                                                                 old["files"])):
                self.repo_state[slug] = old
            else:
                changed.append((repo, signature))
        workers = min(os.cpu_count() or 1, len(changed) // _REPOS_PER_WORKER)
        if workers > 1:
            self._render_in_processes(changed, workers)
        else:
            self.repo_state.update(self.render_changed(changed))
        return [self.repo_state[slug]["row"] for slug in order if slug in self.repo_state]

    def render_changed(self, changed: list[tuple[Repository, list]]) -> dict[str, dict]:
        state = {}
        for repo, signature in changed:
            view = gather(self.store, self.pulls, self.facts, repo)
            if view.tags:
                row, files = self._repository(view)
                state[view.slug] = {"signature": signature, "row": row, "files": files}
        return state

    def _render_in_processes(self, changed: list[tuple[Repository, list]], workers: int) -> None:
        """Chunks for `workers - 1` helper processes; this process renders the last one."""
        chunks = [changed[i::workers] for i in range(workers)]
        context = multiprocessing.get_context("spawn")  # no fork with SQLite handles open
        with ProcessPoolExecutor(workers - 1, mp_context=context) as pool:
            futures = [pool.submit(_render_chunk, self.config, self.writer.out,
                                   self.writer.old_files_under(
                                       [f"r/{_slug(repo)}" for repo, _ in chunk]), chunk)
                       for chunk in chunks[:-1]]
            self.repo_state.update(self.render_changed(chunks[-1]))
            for future in futures:
                result = future.result()
                self.repo_state.update(result["repos"])
                self.writer.merge(result["files"], result["written"], result["reused"])

    def render_site_pages(self, rows: list[dict[str, Any]]) -> None:
        """The pages over all repositories, last: they link to everything else."""
        for asset in sorted((TEMPLATES / "assets").iterdir()):
            self.writer.write(f"assets/{asset.name}", asset.read_bytes())
        self._page("stats.html", "stats.html", self._stats(rows))
        catalog = {"title": self.site["title"], "mirror": self.site["mirror"],
                   "repositories": [_json_row(row) for row in rows]}
        self.writer.write("catalog.json", _dumps(catalog))
        self._page("index.html", "index.html", {"rows": rows, "groups": _group(rows)})

    def _repository(self, view: RepoView) -> tuple[dict[str, Any], list[str]]:
        summaries = {t.name: summarize(view, t.digest) for t in view.tags}
        repo = {"prefix": view.prefix, "name": view.name, "path": view.path}
        depth = 3 + view.name.count("/")
        files = []
        for digest, found in sorted(view.facts.items()):  # leaves first
            relpath = f"{view.slug}/sha256-{digest.split(':')[1]}.html"
            children = [{**c, "summary": view.facts.get(c["digest"])}
                        for c in found.get("children", [])]
            tags = sorted(t.name for t in view.tags if t.digest == digest)
            template = "sif.html" if found["kind"] == "sif" else "manifest.html"
            # Facts are immutable by digest once complete: a cheap key instead of hashing
            # the whole context (which dominates a first render otherwise).
            key = None
            if found["complete"] and all(c["summary"] and c["summary"]["complete"]
                                         for c in children):
                key = _fingerprint(template, repo, digest, found["media_type"], tags,
                                   [c["digest"] for c in children], self.site_key, depth)
            self._page(relpath, template, {"repo": repo, "facts": found, "tags": tags,
                                           "children": children}, depth, key)
            files.append(relpath)
        tags = [{**vars(t), "summary": summaries[t.name],
                 "href": f"sha256-{t.digest.split(':')[1]}.html"} for t in view.tags]
        self.writer.write(f"{view.slug}/repo.json", _dumps({
            "repository": view.path, "tags": [_json_tag(t) for t in tags],
            "manifests": dict(sorted(view.facts.items()))}))
        self._page(f"{view.slug}/index.html", "repository.html", {"repo": repo, "tags": tags},
                   depth)
        files += [f"{view.slug}/repo.json", f"{view.slug}/index.html"]
        return self._repo_row(view, summaries), files

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

    def _stats(self, rows: list[dict]) -> dict[str, Any]:
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

    def _page(self, relpath: str, template: str, context: dict, depth: int = 0,
              key: str | None = None) -> None:
        """Render `template` to `relpath` unless its inputs (or the given `key` standing
        for them) are what the previous render used."""
        context = {**context, "site": self.site, "root": "../" * depth or "./"}
        fingerprint = key or _fingerprint(template, context)
        if self.writer.unchanged(relpath, fingerprint):
            return
        self.writer.write(relpath, self.env.get_template(template).render(context), fingerprint)


def _fingerprint(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{RENDER_VERSION}\0{text}".encode()).hexdigest()


def _slug(repo: Repository) -> str:
    """Directory of a repository's pages. A prefix may hold ':' (host:port), which a
    relative link would read as a URL scheme; '_' never occurs in a prefix."""
    return f"{repo.prefix.replace(':', '_')}/{repo.name}"


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
    for blob in store.blobs():
        count += 1
        size += blob.size
    return count, size


def _json_row(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "href"} | {"page": row["href"]}


def _json_tag(tag: dict) -> dict:
    return {k: tag[k] for k in ("name", "digest", "media_type", "confirmed_at", "pulls",
                                "last_pulled")} | {"page": tag["href"]}


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


def _iso(timestamp: float) -> str | None:
    if not timestamp:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

"""`mirror render`: the static catalog of what is cached, rendered incrementally.

Each repository is gathered (gather.py) and its pages rendered (pages.py) on its own, and
only when its signature (tag and manifest links in the store, its pull counts)
differs from the one the previous render recorded; many changed repositories (a first
render) are shared out to helper processes. The pages over all repositories come last,
from every repository's row. It reads only the content store and pull statistics and
never contacts an upstream. Output is deterministic: everything is sorted and no render
time is written, so the same cache gives a byte-identical site.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror import __version__
from mirror.access.policy import AccessPolicy
from mirror.cache.open_cache import open_cache
from mirror.cache.pulls import PullStats
from mirror.cache.store import ContentStore
from mirror.catalog.gather import Conversions, FactsCache, PullCounts, gather, repo_row
from mirror.catalog.model import RepoRow, SiteInfo, pages_dir
from mirror.catalog.pages import Pages, fingerprint
from mirror.catalog.site_writer import SiteWriter
from mirror.config import Config
from mirror.reference import Repository

_REPOS_PER_WORKER = 100  # below this, a helper process costs more than it saves


@dataclass(frozen=True)
class RenderReport:
    out: Path
    repositories: int
    tags: int
    pages_written: int  # files written by this render
    pages_reused: int  # files left as the previous render wrote them


@dataclass(frozen=True)
class RepoState:
    """What the next render needs to keep a repository's pages as they are."""

    signature: tuple[Any, ...]  # of its links and pull counts when these pages were made
    row: RepoRow
    files: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"signature": self.signature, "row": self.row.to_json(), "files": self.files}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RepoState:
        return cls(tuple(data["signature"]), RepoRow.from_json(data["row"]), tuple(data["files"]))


@dataclass(frozen=True)
class _Changed:
    """A repository to gather and render again, with what it was compared by."""

    repo: Repository
    signature: tuple[Any, ...]
    pulls: PullCounts
    related: tuple[Repository, ...]  # converted from it, or what it was converted from
    namespace: str  # of a local repository, else ""


@dataclass(frozen=True)
class _ChunkResult:
    """What a helper process rendered, for the main process's writer and state."""

    repos: dict[str, RepoState]
    files: dict[str, str]
    written: int
    reused: int


def render(config: Config, out: Path | None = None) -> RenderReport:
    """Render the catalog of `config`'s cache into `out` (default: catalog.out)."""
    with open_cache(config.cache, create=False) as cache:
        writer = SiteWriter(out or config.catalog.out)
        renderer = _Renderer(config, cache.store, writer)
        rows = renderer.render_repositories(cache.pulls)
        renderer.pages.site_pages(rows, *_blob_totals(cache.store))
        writer.commit(
            {
                "site_key": renderer.pages.site_key,
                "repos": {slug: state.to_json() for slug, state in renderer.repo_state.items()},
            }
        )
    return RenderReport(
        writer.out, len(rows), sum(len(r.tag_names) for r in rows), writer.written, writer.reused
    )


def _site_info(config: Config) -> SiteInfo:
    return SiteInfo(
        config.catalog.title, config.catalog.mirror_url, __version__, config.catalog.https
    )


def _render_chunk(
    config: Config, out: Path, old_files: dict[str, str], changed: list[_Changed]
) -> _ChunkResult:
    """A helper process's share of a render: its repositories' pages, written directly."""
    store = ContentStore(config.cache.root, create=False)
    writer = SiteWriter(out, old_files=old_files)
    repos = _Renderer(config, store, writer).render_changed(changed)
    return _ChunkResult(repos, writer.files, writer.written, writer.reused)


class _Renderer:
    """One render's repositories: which changed since the previous render, and their
    pages, rendered here or in helper processes."""

    def __init__(self, config: Config, store: ContentStore, writer: SiteWriter) -> None:
        self.config = config
        self.store = store
        self.writer = writer
        self.pages = Pages(_site_info(config), writer)
        self.facts = FactsCache(store)
        self.policy = AccessPolicy(config.upstreams, config.local)
        self.conversions = Conversions(config.sif.names, config.cache.sif_tree)
        previous = writer.previous if writer.previous.get("site_key") == self.pages.site_key else {}
        self._previous_repos: dict[str, dict] = previous.get("repos", {})
        self.repo_state: dict[str, RepoState] = {}

    def render_repositories(self, pull_stats: PullStats) -> list[RepoRow]:
        """Render each changed repository's pages; keep unchanged ones as they are. Many
        changed repositories (a first render) are shared out to one process per core."""
        order, changed = [], []
        listed = [repo for repo in self.store.list_repositories() if self._listed(repo)]
        related = self._related(listed)
        for repo in listed:
            slug = pages_dir(repo)
            pulls = pull_stats.counts(repo)
            links = [(str(r), self.store.repo_signature(r)) for r in related.get(repo, ())]
            signature = (*self.store.repo_signature(repo), fingerprint(pulls, links))
            order.append(slug)
            old = self._previous(slug)
            if old and old.signature == signature and all(map(self.writer.keep, old.files)):
                self.repo_state[slug] = old
            else:
                namespace = self.config.local.namespace_of(repo) or ""
                changed.append(_Changed(repo, signature, pulls, related.get(repo, ()), namespace))
        workers = min(os.cpu_count() or 1, len(changed) // _REPOS_PER_WORKER)
        if workers > 1:
            self._render_in_processes(changed, workers)
        else:
            self.repo_state.update(self.render_changed(changed))
        return [self.repo_state[slug].row for slug in order if slug in self.repo_state]

    def _listed(self, repo: Repository) -> bool:
        """A page for everything while no repository is protected; once the policy closes
        some to anonymous pulls, only the public ones (a converted image as its source),
        unless the site says otherwise. (A repository of an upstream no longer configured
        then counts as closed.)"""
        return (
            self.config.catalog.include_restricted
            or not self.policy.protects_anything
            or self.policy.is_public(self.conversions.names.source_of(repo))
        )

    def _related(self, listed: list[Repository]) -> dict[Repository, tuple[Repository, ...]]:
        """Each listed image's converted SIFs, and each converted SIF's listed source
        (one with tags: the others have no page)."""
        names = self.conversions.names
        present = set(listed)
        found: dict[Repository, list[Repository]] = {}
        for repo in listed:
            source = names.source_of(repo)
            if source != repo and source in present and self.store.list_tags(source):
                found.setdefault(source, []).append(repo)
                found[repo] = [source]
        return {repo: tuple(others) for repo, others in found.items()}

    def render_changed(self, changed: list[_Changed]) -> dict[str, RepoState]:
        state = {}
        for item in changed:
            view = gather(
                self.store,
                self.facts,
                item.repo,
                item.pulls,
                self.conversions,
                item.related,
                item.namespace,
            )
            if view.tags:
                files = self.pages.repository(view)
                state[view.directory] = RepoState(item.signature, repo_row(view), tuple(files))
        return state

    def _previous(self, slug: str) -> RepoState | None:
        """The previous render's state of a repository, if it recorded one we can read."""
        data = self._previous_repos.get(slug)
        try:
            return RepoState.from_json(data) if data else None
        except (KeyError, TypeError, ValueError):
            return None

    def _render_in_processes(self, changed: list[_Changed], workers: int) -> None:
        """Chunks for `workers - 1` helper processes; this process renders the last one."""
        chunks = [changed[i::workers] for i in range(workers)]
        context = multiprocessing.get_context("spawn")  # no fork with SQLite handles open
        with ProcessPoolExecutor(workers - 1, mp_context=context) as pool:
            futures = [
                pool.submit(
                    _render_chunk,
                    self.config,
                    self.writer.out,
                    self.writer.old_files_under([pages_dir(item.repo) for item in chunk]),
                    chunk,
                )
                for chunk in chunks[:-1]
            ]
            self.repo_state.update(self.render_changed(chunks[-1]))
            for future in futures:
                result = future.result()
                self.repo_state.update(result.repos)
                self.writer.merge(result.files, result.written, result.reused)


def _blob_totals(store: ContentStore) -> tuple[int, int]:
    count = size = 0
    for blob in store.blobs():
        count += 1
        size += blob.size
    return count, size

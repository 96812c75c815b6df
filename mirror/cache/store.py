"""The content store: the source of truth, on the cluster filesystem shared by every instance.

Layout under the cache root (every name below was validated by `reference` first)::

    blobs/sha256/<hh>/<hex>                    content (blobs and manifests), immutable
    repositories/<prefix>/<name>/_manifests/<hex>
                                               repository has manifest <hex>; holds its media type
    repositories/<prefix>/<name>/_blobs/<hex>  repository may serve blob <hex>: one of its
                                               manifests references it or its upstream has it
    repositories/<prefix>/<name>/_tags/<tag>   JSON {"digest", "media_type", "confirmed_at"}
    tmp/                                       in-progress writes, renamed into place when done

Every write goes to a file in `tmp/` (same filesystem, so `rename` is atomic), content is
sha256-verified and fsync'd before the rename: nothing partial or unverified ever appears
under a final path. Repository components never start with `_` (distribution grammar), so
`_manifests` and friends cannot collide with a name.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from mirror.errors import DigestMismatch
from mirror.reference import Digest, Repository

_TEMP_FILE_MAX_AGE = 86400.0  # seconds; only a dead instance leaves a temp file this old


@dataclass(frozen=True, slots=True)
class TagRecord:
    """What a tag pointed at, and when the upstream last confirmed it (Unix seconds)."""

    digest: Digest
    media_type: str
    confirmed_at: float


class BlobWriter:
    """Writes one blob to a temp file while hashing it; `commit` verifies and renames it in.

    Methods are blocking and meant to run in a worker thread: hashlib and os.write release
    the GIL on large buffers, so hashing overlaps the event loop's network I/O.
    """

    def __init__(self, store: "ContentStore", digest: Digest,
                 temp_path: Path | None = None) -> None:
        """Creates the temp file exclusively (O_EXCL holds across NFS, GPFS, Lustre and
        GlusterFS clients): with the digest's partial path, creating it claims the fill."""
        self.digest = digest
        self.final_path = store.blob_path(digest)
        self.temp_path = temp_path or store.temp_path(digest.hex)
        self.size_path = store.partial_size_path(digest) if temp_path else None
        self._hash = hashlib.sha256()
        self._fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.size = 0

    def announce_size(self, size: int) -> None:
        """Tell other instances following this fill how big the blob will be."""
        if self.size_path is not None:
            temp = self.size_path.with_name(f".{self.size_path.name}.{os.getpid()}")
            temp.write_text(str(size))
            os.rename(temp, self.size_path)

    def write(self, chunk: bytes | memoryview) -> None:
        self.write_many([chunk])

    def write_many(self, chunks: list[bytes] | list[memoryview]) -> None:
        """Hash and append chunks (one writev where the kernel takes them all)."""
        for chunk in chunks:
            self.hash(chunk)
        self.append(chunks)

    def hash(self, chunk: bytes | memoryview) -> None:
        """Feed the digest; with `append`, lets two threads share one blob's work."""
        self._hash.update(chunk)

    def append(self, chunks: list[bytes] | list[memoryview]) -> None:
        views = [memoryview(chunk) for chunk in chunks if chunk]
        while views:
            written = os.writev(self._fd, views)
            self.size += written
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if written:
                views[0] = views[0][written:]

    def verify(self) -> None:
        """Check the digest of everything written; on mismatch delete the file and raise."""
        actual = self._hash.hexdigest()
        if actual != self.digest.hex:
            self.abort()
            raise DigestMismatch(f"upstream content for {self.digest} hashed to sha256:{actual}")

    def seal(self) -> None:
        """fsync and close the temp file, keeping it out of sight until `persist`: lets a
        caller verify many blobs before making any of them visible."""
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def persist(self) -> None:
        """fsync and rename the verified file into place, read-only. The size note goes
        first, so once the blob is visible nothing of its fill is left in tmp/ (followers
        arriving in between find the blob a moment later)."""
        self.seal()
        self.final_path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.temp_path, 0o444)
        self._forget_size()
        os.rename(self.temp_path, self.final_path)

    def commit(self) -> None:
        self.verify()
        self.persist()

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            os.unlink(self.temp_path)
        except FileNotFoundError:
            pass
        self._forget_size()

    def _forget_size(self) -> None:
        if self.size_path is not None:
            try:
                os.unlink(self.size_path)
            except FileNotFoundError:
                pass


class ContentStore:
    """Content-addressed blobs plus per-repository links and tag records, as plain files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs" / "sha256"
        self.repos_dir = root / "repositories"
        self.tmp_dir = root / "tmp"
        for directory in (self.blobs_dir, self.repos_dir, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)

    # -- content ---------------------------------------------------------------------------
    def blob_path(self, digest: Digest) -> Path:
        return self.blobs_dir / digest.hex[:2] / digest.hex

    def temp_path(self, stem: str) -> Path:
        return self.tmp_dir / f".{stem}.{os.getpid()}.{secrets.token_hex(4)}"

    def blob_size(self, digest: Digest) -> int | None:
        """Size of a cached blob, or None when it is not cached."""
        try:
            return os.stat(self.blob_path(digest)).st_size
        except FileNotFoundError:
            return None

    def read_blob(self, digest: Digest) -> bytes | None:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            return None

    def new_writer(self, digest: Digest) -> BlobWriter:
        return BlobWriter(self, digest)

    # -- fills shared by every instance on the cluster filesystem ---------------------------
    def partial_path(self, digest: Digest) -> Path:
        """Where the one fill of `digest`, by whichever instance claimed it, is written."""
        return self.tmp_dir / f"{digest.hex}.partial"

    def partial_size_path(self, digest: Digest) -> Path:
        return self.tmp_dir / f"{digest.hex}.size"

    def claim_fill(self, digest: Digest) -> BlobWriter | None:
        """The writer of the shared fill of `digest`, or None if another fill holds it."""
        try:
            return BlobWriter(self, digest, self.partial_path(digest))
        except FileExistsError:
            return None

    def partial_size(self, digest: Digest) -> int | None:
        """The size the filling instance announced, or None if it has not (yet)."""
        text = self._read_small(self.partial_size_path(digest))
        return int(text) if text and text.isdigit() else None

    def break_stale_claim(self, digest: Digest, stale_seconds: float) -> bool:
        """Remove a partial file nobody has touched for `stale_seconds` (its instance died).
        Renaming it aside first means only one instance wins the takeover."""
        partial = self.partial_path(digest)
        try:
            if time.time() - os.stat(partial).st_mtime < stale_seconds:
                return False
            dead = partial.with_name(f"{partial.name}.dead-{os.getpid()}-{secrets.token_hex(4)}")
            os.rename(partial, dead)
        except FileNotFoundError:
            return True  # gone already: the owner finished or someone else broke it
        os.unlink(dead)
        try:
            os.unlink(self.partial_size_path(digest))
        except FileNotFoundError:
            pass
        return True

    def clean_tmp(self, stale_seconds: float) -> int:
        """Delete leftovers of instances that died (SIGKILL, power loss): partial fills whose
        heartbeat stopped, and other temp files older than a day (a bundle import may
        stage files for hours). Safe while other instances run: a live fill is touched
        every few seconds."""
        removed = 0
        now = time.time()
        for entry in os.scandir(self.tmp_dir):
            limit = stale_seconds if entry.name.endswith((".partial", ".size")) or \
                ".partial.dead-" in entry.name else _TEMP_FILE_MAX_AGE
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime > limit:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def put_bytes(self, digest: Digest, data: bytes) -> None:
        """Store small content held in memory (manifests), verified like any blob."""
        if self.blob_size(digest) is not None:
            return
        writer = self.new_writer(digest)
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        writer.commit()

    # -- repository metadata ---------------------------------------------------------------
    def repo_dir(self, repo: Repository) -> Path:
        return self.repos_dir / repo.prefix / repo.name

    def link_manifest(self, repo: Repository, digest: Digest, media_type: str) -> None:
        self._write_small(self.repo_dir(repo) / "_manifests" / digest.hex, media_type.encode())

    def manifest_media_type(self, repo: Repository, digest: Digest) -> str | None:
        """The media type of a manifest linked to `repo`, or None when it is not linked."""
        text = self._read_small(self.repo_dir(repo) / "_manifests" / digest.hex)
        return text or None

    def link_blob(self, repo: Repository, digest: Digest) -> None:
        path = self.repo_dir(repo) / "_blobs" / digest.hex
        if not path.exists():
            self._write_small(path, b"")

    def blob_linked(self, repo: Repository, digest: Digest) -> bool:
        return (self.repo_dir(repo) / "_blobs" / digest.hex).exists()

    def write_tag(self, repo: Repository, tag: str, record: TagRecord) -> None:
        body = {"digest": str(record.digest), "media_type": record.media_type,
                "confirmed_at": record.confirmed_at}
        self._write_small(self.repo_dir(repo) / "_tags" / tag, json.dumps(body).encode())

    def read_tag(self, repo: Repository, tag: str) -> TagRecord | None:
        text = self._read_small(self.repo_dir(repo) / "_tags" / tag)
        if not text:
            return None
        try:
            body = json.loads(text)
            return TagRecord(Digest.parse(body["digest"]), str(body["media_type"]),
                             float(body["confirmed_at"]))
        except (ValueError, KeyError, TypeError):
            return None  # a torn or foreign file counts as absent; the upstream is asked

    def list_tags(self, repo: Repository) -> list[str]:
        try:
            return sorted(p.name for p in (self.repo_dir(repo) / "_tags").iterdir()
                          if not p.name.startswith("."))
        except FileNotFoundError:
            return []

    def list_repositories(self) -> list[Repository]:
        """Every repository with at least one cached manifest, sorted."""
        found = []
        for prefix_entry in _subdirs(self.repos_dir):
            stack = [(prefix_entry.path, "")]
            while stack:
                path, name = stack.pop()
                for entry in _subdirs(path):
                    if entry.name == "_manifests" and name:
                        found.append(Repository(prefix_entry.name, name))
                    elif not entry.name.startswith("_"):
                        stack.append((entry.path, f"{name}/{entry.name}" if name else entry.name))
        return sorted(found, key=str)

    def repo_signature(self, repo: Repository) -> list[int]:
        """Changes whenever a tag or manifest link of `repo` is added, moved or replaced
        (every write renames into these directories): a cheap 'did it change' check."""
        signature = []
        for part in ("_tags", "_manifests"):
            try:
                signature.append(os.stat(self.repo_dir(repo) / part).st_mtime_ns)
            except FileNotFoundError:
                signature.append(0)
        return signature

    # -- pull statistics, one file per node -----------------------------------------------
    def write_pull_stats(self, node: str, totals: dict) -> None:
        self._write_small(self.root / "stats" / f"{node}.json",
                          json.dumps(totals, sort_keys=True).encode())

    def read_pull_stats(self) -> dict[str, dict]:
        found = {}
        for path in sorted((self.root / "stats").glob("*.json")):
            try:
                totals = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a node's torn or foreign file: its counts are missing, not wrong
            if isinstance(totals, dict):
                found[path.stem] = {repo: {ref: tuple(v) for ref, v in refs.items()}
                                    for repo, refs in totals.items() if isinstance(refs, dict)}
        return found

    # -- small files -----------------------------------------------------------------------
    def _write_small(self, path: Path, data: bytes) -> None:
        """Atomic replace of a small metadata file. Not fsync'd: a torn link after a crash
        reads as absent and costs one upstream request, never wrong content."""
        temp = self.temp_path(path.name)
        temp.write_bytes(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.rename(temp, path)

    @staticmethod
    def _read_small(path: Path) -> str | None:
        try:
            return path.read_text()
        except FileNotFoundError:
            return None


def _subdirs(path: Path | str) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as entries:
            return sorted((e for e in entries if e.is_dir(follow_symlinks=False)),
                          key=lambda e: e.name)
    except FileNotFoundError:
        return []

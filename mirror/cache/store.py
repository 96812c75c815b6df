"""The content store: the source of truth, on the cluster filesystem shared by every instance.

This module alone knows the layout; everything else asks the store (blobs, links, tags,
quarantine) and never builds a path under the cache root. Layout under the root (every name
below was validated by `reference` first)::

    blobs/sha256/<hh>/<hex>                    content (blobs and manifests), immutable
    repositories/<prefix>/<name>/_manifests/<hex>
                                               repository has manifest <hex>; holds its media type
    repositories/<prefix>/<name>/_blobs/<hex>  repository may serve blob <hex>: one of its
                                               manifests references it or its upstream has it
    repositories/<prefix>/<name>/_tags/<tag>   JSON {"digest", "media_type", "confirmed_at"}
    repositories/<prefix>/<name>/_pushed/<hex> who pushed manifest <hex> here, and when (local
                                               namespace): JSON {"user", "at"}
    repositories/<prefix>/<name>/_referrers/<subject hex>/<hex>
                                               manifest <hex> names <subject hex> as its
                                               `subject`: its descriptor, as the referrers
                                               API lists it (JSON)
    uploads/<id>/session, uploads/<id>/data    a blob upload to the local namespace: who
                                               started it for which repository (JSON
                                               {"repository", "user", "started_at"}), and
                                               the bytes received so far, through any
                                               instance; renamed into blobs/ once verified
    tmp/                                       in-progress writes, renamed into place when done
    tmp/<hex>.partial, tmp/<hex>.size          the one shared fill of a blob, and its size
    tmp/conversion-<version>-<hex>.claim       the one conversion of image manifest <hex> (by
                                               converter <version>), touched while it runs
    tmp/conversion-<version>-<hex>.sif         that conversion's output until it is stored
    conversions/<version>/<hex>                the SIF manifest converted from image manifest
                                               <hex> by converter <version>: JSON {"manifest"}
    conversions/<version>/<hex>.refused        the converter refused that image: JSON
                                               {"message", "at"}
    quarantine/sha256/<hex>                    blobs `verify` found corrupt, kept for inspection
    stats/<node>.json                          each node's published pull counts
    auth/token-signing.key                     the key every instance signs client tokens
                                               with (mode 0600, made by the first to start)

Every write goes to a file in `tmp/` (same filesystem, so `rename` is atomic), content is
sha256-verified and fsync'd before the rename: nothing partial or unverified ever appears
under a final path. Repository components never start with `_` (distribution grammar), so
`_manifests` and friends cannot collide with a name.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mirror.cache.blob_writer import BlobWriter
from mirror.cache.dirs import make_dirs, rename_into
from mirror.cache.refusals import StoreRefusals
from mirror.errors import CacheMissing, MirrorError
from mirror.reference import Digest, Repository

_TEMP_FILE_MAX_AGE = 86400.0  # seconds; only a dead instance leaves a temp file this old
_UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")  # what `start_upload` makes; checked before use

__all__ = [
    "BlobWriter",
    "ContentStore",
    "PushRecord",
    "StoredBlob",
    "TagRecord",
    "UploadRecord",
    "is_upload_id",
]


@dataclass(frozen=True, slots=True)
class TagRecord:
    """What a tag pointed at, and when the upstream last confirmed it (Unix seconds)."""

    digest: Digest
    media_type: str
    confirmed_at: float


@dataclass(frozen=True, slots=True)
class PushRecord:
    """Who pushed a manifest into a repository (None: unknown), and when (Unix seconds)."""

    user: str | None
    at: float


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """A blob upload in progress: kept in the store, so any instance can continue it."""

    upload_id: str
    repository: Repository
    user: str | None
    started_at: float  # Unix seconds
    size: int  # bytes received so far
    touched_at: float  # when bytes last arrived (or it started), Unix seconds


def is_upload_id(text: str) -> bool:
    """`text` has the form of an upload id (so it can name a directory of the store)."""
    return _UPLOAD_ID_RE.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A blob under its final path, and its size in bytes."""

    digest: Digest
    size: int


class ContentStore:
    """Content-addressed blobs plus per-repository links and tag records, as plain files."""

    def __init__(self, root: Path, *, create: bool = True) -> None:
        """The store at `root`, created if need be; with `create=False` (commands that only
        read) a root without a store raises `CacheMissing` instead of making an empty one."""
        self._root = root
        self._blobs_dir = root / "blobs" / "sha256"
        self._repos_dir = root / "repositories"
        self._tmp_dir = root / "tmp"
        self._stats_dir = root / "stats"
        self._conversions_dir = root / "conversions"
        self._uploads_dir = root / "uploads"
        self.refusals = StoreRefusals(root)  # whether its filesystem refuses writes now
        if not create:
            if not self._blobs_dir.is_dir():
                raise CacheMissing(
                    f"no cache at {root}: nothing was pulled into it yet, "
                    "or cache.root names the wrong directory"
                )
            return
        for directory in (self._blobs_dir, self._repos_dir, self._tmp_dir):
            make_dirs(directory)

    # -- paths: the one place that maps names to files -------------------------------------
    @property
    def root(self) -> Path:
        """The store's directory (a child process opens the same store from it)."""
        return self._root

    def blob_path(self, digest: Digest) -> Path:
        return self._blobs_dir / digest.hex[:2] / digest.hex

    def temp_path(self, stem: str) -> Path:
        return self._tmp_dir / f".{stem}.{os.getpid()}.{secrets.token_hex(4)}"

    def partial_path(self, digest: Digest) -> Path:
        """Where the one fill of `digest`, by whichever instance claimed it, is written."""
        return self._tmp_dir / f"{digest.hex}.partial"

    def token_key_path(self) -> Path:
        """Where the key that signs client tokens lives, shared by every instance."""
        return self._root / "auth" / "token-signing.key"

    @property
    def quarantine_dir(self) -> Path:
        """Where `quarantine_blob` moves corrupt blobs (for messages to an operator)."""
        return self._root / "quarantine"

    def _partial_size_path(self, digest: Digest) -> Path:
        return self._tmp_dir / f"{digest.hex}.size"

    def _repo_dir(self, repo: Repository) -> Path:
        return self._repos_dir / repo.prefix / repo.name

    def _manifest_link(self, repo: Repository, digest: Digest) -> Path:
        return self._repo_dir(repo) / "_manifests" / digest.hex

    def _blob_link(self, repo: Repository, digest: Digest) -> Path:
        return self._repo_dir(repo) / "_blobs" / digest.hex

    def _tag_path(self, repo: Repository, tag: str) -> Path:
        return self._repo_dir(repo) / "_tags" / tag

    def _push_record_path(self, repo: Repository, digest: Digest) -> Path:
        return self._repo_dir(repo) / "_pushed" / digest.hex

    def _referrers_dir(self, repo: Repository, subject: Digest) -> Path:
        return self._repo_dir(repo) / "_referrers" / subject.hex

    def _upload_dir(self, upload_id: str) -> Path:
        if not is_upload_id(upload_id):
            raise ValueError(f"not an upload id: {upload_id[:80]!r}")  # callers check first
        return self._uploads_dir / upload_id

    def _stats_path(self, node: str) -> Path:
        return self._stats_dir / f"{node}.json"

    # -- content ---------------------------------------------------------------------------
    def blob_stored_at(self, digest: Digest) -> float | None:
        """When a cached blob's content was written, or None when it is not cached."""
        return _mtime(self.blob_path(digest))

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
        return BlobWriter(digest, self.blob_path(digest), self.temp_path(digest.hex))

    def put_bytes(self, digest: Digest, data: bytes) -> bool:
        """Store small content held in memory (manifests), verified like any blob; False
        if it was stored already."""
        if self.blob_size(digest) is not None:
            return False
        writer = self.new_writer(digest)
        try:
            writer.write(data)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        return True

    def put_file(self, digest: Digest, path: Path) -> bool:
        """Move a finished, fsync'd file of `tmp/` whose sha256 its writer computed into
        place as the blob `digest`, read-only; False if it was stored already (the file is
        then deleted)."""
        if self.blob_size(digest) is not None:
            _unlink(path)
            return False
        target = self.blob_path(digest)
        os.chmod(path, 0o444)
        rename_into(path, target)
        return True

    def blobs(self) -> Iterator[StoredBlob]:
        """Every blob under a final path, with its size, in digest order."""
        for shard in _subdirs(self._blobs_dir):
            yield from self._shard_blobs(shard.path)

    # Blobs are spread over 256 directories by the first two hex digits of their digest: a
    # scan of the store can go one such shard at a time.
    BLOB_SHARDS = tuple(f"{n:02x}" for n in range(256))

    @staticmethod
    def blob_shard(digest: Digest) -> str:
        """Which of `BLOB_SHARDS` holds the blob."""
        return digest.hex[:2]

    def shard_blobs(self, shard: str) -> list[StoredBlob]:
        """The blobs of one of `BLOB_SHARDS`: a bounded piece of a scan of the store."""
        return list(self._shard_blobs(self._blobs_dir / shard))

    def _shard_blobs(self, path: Path | str) -> Iterator[StoredBlob]:
        try:
            with os.scandir(path) as scan:
                entries = sorted(
                    (e for e in scan if len(e.name) == 64 and not e.name.startswith(".")),
                    key=lambda e: e.name,
                )
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                size = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue  # deleted since the scan
            yield StoredBlob(Digest(entry.name), size)

    def delete_blob(self, digest: Digest) -> None:
        """Remove a blob for good (gc); one already gone is fine."""
        _unlink(self.blob_path(digest))

    def quarantine_blob(self, digest: Digest) -> Path:
        """Move a blob out of service (one rename), keeping its bytes; return where to."""
        target = self.quarantine_dir / "sha256" / digest.hex
        rename_into(self.blob_path(digest), target)
        return target

    def probe_writes(self) -> None:
        """Create, write and remove a small file in tmp/ (a readiness probe): raises the
        OSError of a store whose filesystem does not take writes now."""
        path = self.temp_path("probe")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
            _unlink(path)

    # -- fills shared by every instance on the cluster filesystem ---------------------------
    def claim_fill(self, digest: Digest) -> BlobWriter | None:
        """The writer of the shared fill of `digest`, or None if another fill holds it."""
        try:
            return BlobWriter(
                digest,
                self.blob_path(digest),
                self.partial_path(digest),
                self._partial_size_path(digest),
            )
        except FileExistsError:
            return None

    def partial_size(self, digest: Digest) -> int | None:
        """The size the filling instance announced, or None if it has not (yet)."""
        text = _read_small(self._partial_size_path(digest))
        return int(text) if text and text.isdigit() else None

    def break_stale_claim(self, digest: Digest, stale_seconds: float) -> bool:
        """Remove a partial file nobody has touched for `stale_seconds` (its instance died)."""
        if not _break_stale(self.partial_path(digest), stale_seconds):
            return False
        _unlink(self._partial_size_path(digest))
        return True

    def take_over_fill(self, digest: Digest, stale_seconds: float) -> BlobWriter | None:
        """The writer that continues the shared fill of `digest` whose instance died
        (untouched for `stale_seconds`), keeping the bytes it wrote; None if the fill is
        alive or another instance took it first. The partial file is renamed aside (one
        instance wins), touched, and linked back (fails if a new claim appeared meanwhile),
        so instances following it go on reading the same file."""
        partial = self.partial_path(digest)
        aside = partial.with_name(f"{partial.name}.dead-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            if time.time() - os.stat(partial).st_mtime < stale_seconds:
                return None
            os.rename(partial, aside)
        except FileNotFoundError:  # it failed, or another instance is taking it over
            return self.claim_fill(digest)
        try:
            os.utime(aside)
            os.link(aside, partial)
        except FileExistsError:
            return None
        finally:
            os.unlink(aside)
        return BlobWriter(
            digest,
            self.blob_path(digest),
            partial,
            self._partial_size_path(digest),
            resume=True,
        )

    def clean_tmp(self, stale_seconds: float) -> int:
        """Delete leftovers of instances that died (SIGKILL, power loss): partial fills whose
        heartbeat stopped, and other temp files older than a day (a bundle import may
        stage files for hours). Safe while other instances run: a live fill is touched
        every few seconds."""
        removed = 0
        now = time.time()
        for entry in os.scandir(self._tmp_dir):
            limit = (
                stale_seconds
                if entry.name.endswith((".partial", ".size", ".claim"))
                or ".partial.dead-" in entry.name
                or ".claim.dead-" in entry.name
                else _TEMP_FILE_MAX_AGE
            )
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime > limit:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    # -- conversions of images into SIFs, one per image across every instance ---------------
    def claim_conversion(self, version: str, source: Digest) -> Path | None:
        """Claim the one conversion of image manifest `source` by converter `version`
        (created exclusively, like a fill's partial file): the claim file, to touch while
        converting; None if another instance holds it. Output a dead holder left is removed."""
        claim = self._conversion_tmp(version, source, "claim")
        try:
            os.close(os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            return None
        output = self.conversion_output_path(version, source)
        for leftover in output.parent.glob(f"{output.name}*"):
            _unlink(leftover)
        return claim

    def conversion_output_path(self, version: str, source: Digest) -> Path:
        """Where the holder of the claim writes the SIF (on the store's filesystem)."""
        return self._conversion_tmp(version, source, "sif")

    def conversion_claimed(self, version: str, source: Digest) -> bool:
        return self._conversion_tmp(version, source, "claim").exists()

    def break_stale_conversion_claim(
        self, version: str, source: Digest, stale_seconds: float
    ) -> bool:
        """Remove a conversion claim nobody has touched for `stale_seconds` (its instance
        died); True when there is none now."""
        return _break_stale(self._conversion_tmp(version, source, "claim"), stale_seconds)

    def release_conversion(self, version: str, source: Digest) -> None:
        _unlink(self._conversion_tmp(version, source, "claim"))

    def write_conversion(self, version: str, source: Digest, manifest: Digest) -> None:
        """Record that image manifest `source` became the SIF manifest `manifest`."""
        body = json.dumps({"manifest": str(manifest)}).encode()
        self._write_small(self._conversion_record(version, source), body)
        _unlink(self._conversion_record(version, source, ".refused"))

    def read_conversion(self, version: str, source: Digest) -> Digest | None:
        text = _read_small(self._conversion_record(version, source))
        try:
            return Digest.parse(json.loads(text)["manifest"]) if text else None
        except (ValueError, KeyError, TypeError, MirrorError):
            return None  # torn or foreign: converted again, to the same bytes

    def write_conversion_refusal(self, version: str, source: Digest, message: str) -> None:
        body = json.dumps({"message": message, "at": time.time()}).encode()
        self._write_small(self._conversion_record(version, source, ".refused"), body)

    def read_conversion_refusal(self, version: str, source: Digest) -> tuple[str, float] | None:
        """Why the converter refused image manifest `source`, and when (Unix seconds)."""
        text = _read_small(self._conversion_record(version, source, ".refused"))
        try:
            body = json.loads(text) if text else None
            return (str(body["message"]), float(body["at"])) if body else None
        except (ValueError, KeyError, TypeError):
            return None

    def _conversion_tmp(self, version: str, source: Digest, suffix: str) -> Path:
        return self._tmp_dir / f"conversion-{version}-{source.hex}.{suffix}"

    def _conversion_record(self, version: str, source: Digest, suffix: str = "") -> Path:
        return self._conversions_dir / version / f"{source.hex}{suffix}"

    # -- repository links --------------------------------------------------------------------
    def link_manifest(self, repo: Repository, digest: Digest, media_type: str) -> None:
        self._write_small(self._manifest_link(repo, digest), media_type.encode())

    def manifest_media_type(self, repo: Repository, digest: Digest) -> str | None:
        """The media type of a manifest linked to `repo`, or None when it is not linked."""
        return _read_small(self._manifest_link(repo, digest)) or None

    def linked_manifests(self, repo: Repository) -> list[Digest]:
        """Every manifest linked to `repo`, in digest order."""
        return _digest_names(self._repo_dir(repo) / "_manifests")

    def manifest_linked_at(self, repo: Repository, digest: Digest) -> float | None:
        """When `digest` was (last) linked to `repo`, or None when it is not linked."""
        return _mtime(self._manifest_link(repo, digest))

    def unlink_manifest(self, repo: Repository, digest: Digest) -> None:
        _unlink(self._manifest_link(repo, digest))

    def link_blob(self, repo: Repository, digest: Digest, *, refresh: bool = False) -> None:
        """Let `repo` serve blob `digest`; `refresh` also renews the link's time on a link
        that exists (a blob pushed again), which `gc` reads as the time of the push."""
        path = self._blob_link(repo, digest)
        if not path.exists():
            self._write_small(path, b"")
        elif refresh:
            try:
                os.utime(path)
            except FileNotFoundError:  # gc took it back this moment
                self._write_small(path, b"")

    def blob_linked(self, repo: Repository, digest: Digest) -> bool:
        return self._blob_link(repo, digest).exists()

    def unlink_blob(self, repo: Repository, digest: Digest) -> None:
        _unlink(self._blob_link(repo, digest))

    def linked_blobs(self, repo: Repository) -> list[Digest]:
        """Every blob linked to `repo`, in digest order."""
        return _digest_names(self._repo_dir(repo) / "_blobs")

    def blob_linked_at(self, repo: Repository, digest: Digest) -> float | None:
        """When `digest` was (last) linked to `repo`, a push renewing it (for gc to spare
        a pushed blob whose manifest is still to come), or None when it is not linked."""
        return _mtime(self._blob_link(repo, digest))

    # -- the local namespace: who pushed what, and referrers ------------------------------
    def write_push_record(self, repo: Repository, digest: Digest, record: PushRecord) -> None:
        body = json.dumps({"user": record.user, "at": record.at}).encode()
        self._write_small(self._push_record_path(repo, digest), body)

    def read_push_record(self, repo: Repository, digest: Digest) -> PushRecord | None:
        text = _read_small(self._push_record_path(repo, digest))
        try:
            body = json.loads(text) if text else None
            if not isinstance(body, dict):
                return None
            user = body.get("user")
            return PushRecord(user if isinstance(user, str) else None, float(body["at"]))
        except (ValueError, KeyError, TypeError):
            return None

    def remove_push_record(self, repo: Repository, digest: Digest) -> None:
        _unlink(self._push_record_path(repo, digest))

    def link_referrer(
        self, repo: Repository, subject: Digest, digest: Digest, descriptor: dict
    ) -> None:
        """Record that manifest `digest` of `repo` refers to `subject`; `descriptor` is its
        entry in the referrers index (mediaType, digest, size, artifactType, annotations)."""
        body = json.dumps(descriptor, sort_keys=True).encode()
        self._write_small(self._referrers_dir(repo, subject) / digest.hex, body)

    def referrers(self, repo: Repository, subject: Digest) -> list[dict]:
        """The descriptors of `repo`'s manifests whose subject is `subject`, by digest."""
        directory = self._referrers_dir(repo, subject)
        try:
            names = sorted(n for n in os.listdir(directory) if len(n) == 64)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            text = _read_small(directory / name)
            try:
                descriptor = json.loads(text) if text else None
            except ValueError:
                continue  # torn: the referrer is missing from the list, never wrong
            if isinstance(descriptor, dict):
                found.append(descriptor)
        return found

    def unlink_referrer(self, repo: Repository, subject: Digest, digest: Digest) -> None:
        _unlink(self._referrers_dir(repo, subject) / digest.hex)

    # -- blob uploads to the local namespace, shared by every instance -----------------------
    def start_upload(self, repo: Repository, user: str | None, now: float) -> UploadRecord:
        """A new, empty upload session for `repo`, started by `user`."""
        upload_id = secrets.token_hex(16)
        directory = self._upload_dir(upload_id)
        make_dirs(directory.parent)
        directory.mkdir()  # a fresh random id: never exists already
        try:
            session = {"repository": str(repo), "prefix": repo.prefix, "name": repo.name}
            body = json.dumps({**session, "user": user, "started_at": now}).encode()
            self._write_small(directory / "session", body)
            os.close(os.open(directory / "data", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return UploadRecord(upload_id, repo, user, now, 0, now)

    def upload_data_path(self, upload_id: str) -> Path:
        """The file holding the upload's bytes so far (append to it; rename it to finish)."""
        return self._upload_dir(upload_id) / "data"

    def read_upload(self, upload_id: str) -> UploadRecord | None:
        """The session `upload_id` names; None when there is none (finished, cancelled,
        removed by gc, or never started)."""
        if not is_upload_id(upload_id):
            return None
        directory = self._upload_dir(upload_id)
        text = _read_small(directory / "session")
        try:
            body = json.loads(text) if text else {}
            stat = os.stat(directory / "data")
            repo = Repository(str(body["prefix"]), str(body["name"]))
            user = body.get("user")
            return UploadRecord(
                upload_id,
                repo,
                user if isinstance(user, str) else None,
                float(body["started_at"]),
                stat.st_size,
                stat.st_mtime,
            )
        except (ValueError, KeyError, TypeError, FileNotFoundError):
            return None

    def delete_upload(self, upload_id: str) -> None:
        """Remove the session and whatever bytes it holds; one already gone is fine."""
        if is_upload_id(upload_id):
            shutil.rmtree(self._upload_dir(upload_id), ignore_errors=True)

    def upload_ids(self) -> list[str]:
        """Every upload session directory, including torn ones (for gc), sorted."""
        try:
            return sorted(name for name in os.listdir(self._uploads_dir) if is_upload_id(name))
        except FileNotFoundError:
            return []

    def upload_bytes(self, upload_id: str) -> int:
        """Bytes a session holds on disk (0 when it has no data file), even when torn."""
        try:
            return os.stat(self.upload_data_path(upload_id)).st_size
        except FileNotFoundError:
            return 0

    def upload_touched_at(self, upload_id: str) -> float | None:
        """When the session last changed (its newest file), even when torn; None if gone."""
        directory = self._upload_dir(upload_id)
        paths = (directory, directory / "session", directory / "data")
        times = [t for t in map(_mtime, paths) if t is not None]
        return max(times) if times else None

    def namespace_links(self, prefix: str, namespace: str) -> set[Digest]:
        """Every blob and manifest linked to a repository `<prefix>/<namespace>/...` (a
        namespace of the local registry), each once: what its quota counts."""
        found: set[Digest] = set()
        stack = [str(self._repos_dir / prefix / namespace)]
        while stack:
            for entry in _subdirs(stack.pop()):
                if entry.name in ("_blobs", "_manifests"):
                    found.update(Digest(name) for name in _names(entry.path) if len(name) == 64)
                elif not entry.name.startswith("_"):
                    stack.append(entry.path)
        return found

    # -- tags --------------------------------------------------------------------------------
    def write_tag(self, repo: Repository, tag: str, record: TagRecord) -> None:
        body = {
            "digest": str(record.digest),
            "media_type": record.media_type,
            "confirmed_at": record.confirmed_at,
        }
        self._write_small(self._tag_path(repo, tag), json.dumps(body).encode())

    def read_tag(self, repo: Repository, tag: str) -> TagRecord | None:
        text = _read_small(self._tag_path(repo, tag))
        if not text:
            return None
        try:
            body = json.loads(text)
            return TagRecord(
                Digest.parse(body["digest"]), str(body["media_type"]), float(body["confirmed_at"])
            )
        except (ValueError, KeyError, TypeError):
            return None  # a torn or foreign file counts as absent; the upstream is asked

    def list_tags(self, repo: Repository) -> list[str]:
        try:
            return sorted(
                name
                for name in os.listdir(self._repo_dir(repo) / "_tags")
                if not name.startswith(".")
            )
        except FileNotFoundError:
            return []

    def tag_records(self, repo: Repository) -> dict[str, TagRecord]:
        """Every readable tag of `repo` with its record, in tag order."""
        records = {}
        for tag in self.list_tags(repo):
            record = self.read_tag(repo, tag)
            if record is not None:
                records[tag] = record
        return records

    def untag(self, repo: Repository, tag: str) -> None:
        _unlink(self._tag_path(repo, tag))

    # -- repositories ------------------------------------------------------------------------
    def list_repositories(self, *, with_blob_links: bool = False) -> list[Repository]:
        """Every repository with at least one cached manifest, sorted; `with_blob_links`
        adds those that only link blobs (a push whose manifest has not come yet)."""
        marks = ("_manifests", "_blobs") if with_blob_links else ("_manifests",)
        found = set()
        for prefix_entry in _subdirs(self._repos_dir):
            stack = [(prefix_entry.path, "")]
            while stack:
                path, name = stack.pop()
                for entry in _subdirs(path):
                    if entry.name in marks and name:
                        found.add(Repository(prefix_entry.name, name))
                    elif not entry.name.startswith("_"):
                        stack.append((entry.path, f"{name}/{entry.name}" if name else entry.name))
        return sorted(found, key=str)

    def repo_signature(self, repo: Repository) -> list[int]:
        """Changes whenever a tag or manifest link of `repo` is added, moved or replaced
        (every write renames into these directories): a cheap 'did it change' check."""
        signature = []
        for part in ("_tags", "_manifests"):
            try:
                signature.append(os.stat(self._repo_dir(repo) / part).st_mtime_ns)
            except FileNotFoundError:
                signature.append(0)
        return signature

    # -- pull statistics, one file per node -----------------------------------------------
    def write_pull_stats(self, node: str, totals: dict) -> None:
        self._write_small(self._stats_path(node), json.dumps(totals, sort_keys=True).encode())

    def read_pull_stats(self) -> dict[str, dict]:
        found = {}
        for path in sorted(self._stats_dir.glob("*.json")):
            try:
                totals = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a node's torn or foreign file: its counts are missing, not wrong
            if isinstance(totals, dict):
                found[path.stem] = {
                    repo: {ref: tuple(v) for ref, v in refs.items()}
                    for repo, refs in totals.items()
                    if isinstance(refs, dict)
                }
        return found

    # -- small files -----------------------------------------------------------------------
    def _write_small(self, path: Path, data: bytes) -> None:
        """Atomic replace of a small metadata file. Not fsync'd: a torn link after a crash
        reads as absent and costs one upstream request, never wrong content."""
        temp = self.temp_path(path.name)
        try:
            temp.write_bytes(data)
            rename_into(temp, path)
        except BaseException:  # a full disk must not leave the temp file behind
            _unlink(temp)
            raise


def _break_stale(claim: Path, stale_seconds: float) -> bool:
    """Remove a claim file nobody has touched for `stale_seconds`; True when it is gone.
    Renaming it aside first means only one instance wins the takeover."""
    try:
        if time.time() - os.stat(claim).st_mtime < stale_seconds:
            return False
        dead = claim.with_name(f"{claim.name}.dead-{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(claim, dead)
    except FileNotFoundError:
        return True  # gone already: the owner finished or someone else broke it
    os.unlink(dead)
    return True


def _read_small(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _mtime(path: Path) -> float | None:
    """When `path` last changed, or None when there is nothing there."""
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return None


def _digest_names(directory: Path) -> list[Digest]:
    """The digests a link directory names (files named by their hex), in digest order."""
    return [Digest(name) for name in sorted(_names(directory)) if len(name) == 64]


def _names(path: Path | str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _subdirs(path: Path | str) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as entries:
            return sorted(
                (e for e in entries if e.is_dir(follow_symlinks=False)), key=lambda e: e.name
            )
    except FileNotFoundError:
        return []

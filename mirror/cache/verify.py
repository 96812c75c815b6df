"""`mirror verify`: re-hash every blob in the store and quarantine the corrupt ones.

A blob is immutable once renamed into place, so a mismatch means the filesystem or
someone with write access damaged it. A corrupt blob is moved (one rename on the same
filesystem) to `quarantine/sha256/<hex>`: it is no longer served, the next pull fetches a
good copy from the upstream, and the bad bytes stay for inspection.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mirror.cache.store import ContentStore
from mirror.reference import Digest

_CHUNK = 4 * 1024 * 1024


@dataclass
class VerifyReport:
    checked: int = 0
    bytes_checked: int = 0
    corrupt: list[tuple[str, str]] = field(default_factory=list)  # (digest, actual)


def blob_files(store: ContentStore) -> Iterator[tuple[Digest, Path, int]]:
    """Every blob under a final path, with its size."""
    for shard in sorted(p for p in store.blobs_dir.iterdir() if p.is_dir()):
        for path in sorted(shard.iterdir()):
            if len(path.name) == 64 and not path.name.startswith("."):
                yield Digest(path.name), path, path.stat().st_size


def verify_store(store: ContentStore, progress: Callable[[int], None] | None = None,
                 workers: int = 2) -> VerifyReport:
    """Hash every blob (sha256 releases the GIL: `workers` threads use as many cores)."""
    report = VerifyReport()
    advance = progress or (lambda done: None)

    def check(item: tuple[Digest, Path, int]) -> tuple[Digest, Path, int, str]:
        digest, path, size = item
        hasher = hashlib.sha256()
        with open(path, "rb") as blob:
            while chunk := blob.read(_CHUNK):
                hasher.update(chunk)
                advance(len(chunk))
        return digest, path, size, hasher.hexdigest()

    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        for digest, path, size, actual in pool.map(check, blob_files(store)):
            report.checked += 1
            report.bytes_checked += size
            if actual != digest.hex:
                quarantine(store, path)
                report.corrupt.append((str(digest), f"sha256:{actual}"))
    return report


def quarantine(store: ContentStore, path: Path) -> Path:
    target = store.root / "quarantine" / "sha256" / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(path, target)
    return target
